"""graphsphere.files: atomic writes and checksummed cache files."""
import os
import stat

import numpy as np
import pytest

from graphsphere.files import atomic_write, is_verified, write_verified


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "result.txt"
    with atomic_write(path, "w") as f:
        f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_write(path, "w") as f:
        f.write("half of the second")
        raise RuntimeError("killed")
    assert path.read_text() == "first"                       # untouched
    assert [p.name for p in path.parent.iterdir()] == ["result.txt"]   # no temporary file left


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    # mkstemp makes files 0600: results and pictures were unreadable to the group (found by the climate work)
    old = os.umask(0o022)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        with atomic_write(tmp_path / "atomic.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == 0o644
    os.chmod(tmp_path / "atomic.txt", 0o640)                  # a replaced file keeps its own mode
    with atomic_write(tmp_path / "atomic.txt", "w") as f:
        f.write("y")
    assert stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode) == 0o640


def test_write_verified_detects_a_damaged_file(tmp_path):
    path = tmp_path / "map.npy"
    write_verified(path, lambda f: np.save(f, np.arange(5.0)))
    assert is_verified(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert not is_verified(path)
