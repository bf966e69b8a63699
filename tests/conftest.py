import os

import numpy as np
import pytest

# Keep tests reproducible and light on the 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
