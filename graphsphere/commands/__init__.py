"""Sub-commands of the ``graphsphere`` command line, one module each (see ``graphsphere.cli``)."""
