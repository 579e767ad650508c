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


# Property tests explore new inputs on developers' machines, but CI replays a
# fixed sequence so that a run is reproducible from its commit.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def restore_isa():
    """Puts back the instruction-set choice a test changed with fattn.set_isa."""
    import fattn
    saved = fattn.get_isa()
    yield
    fattn.set_isa(saved)
