import os

import numpy as np
import pytest

# Keep tests reproducible and light on a small shared machine: OpenMP (healpy) and BLAS threads
# that compete for cores were seen to slow single calls 10-100 times.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # optional: the tests run without it, only slower on a busy machine
    pass


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
