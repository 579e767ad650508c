import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture
def restore_threads():
    import fattn
    saved = fattn.get_num_threads()
    yield
    fattn.set_num_threads(saved)
