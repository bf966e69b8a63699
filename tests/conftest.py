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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (restored after)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
