"""The 3D-shapes experiment (SHREC'17-style retrieval on real meshes).

Meshes are projected onto the sphere (``graphsphere.data.meshes``), classified by a
DeepSphere model and by an SHT-based spherical CNN (:mod:`.sht_cnn`), and scored with
the SHREC'17 retrieval metrics (:mod:`.retrieval`).
"""
