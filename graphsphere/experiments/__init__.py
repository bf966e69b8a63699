"""End-to-end reproductions of the papers' experiments (one module each).

Their configs live in the repository's ``experiments/`` folder; each runs with
``graphsphere experiment NAME [CONFIG] [key=value ...]``.
"""
