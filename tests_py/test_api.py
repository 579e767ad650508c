import numpy as np
import pytest

import fattn


def test_version_and_build_info():
    info = fattn.build_info()
    assert fattn.__version__ == info["version"] == "0.1.0"
    assert set(info) >= {"version", "compiler", "build_type", "cpu_features", "isa", "num_threads"}
    assert info["num_threads"] == fattn.get_num_threads() >= 1


def test_set_num_threads_round_trip(restore_threads):
    fattn.set_num_threads(3)
    assert fattn.get_num_threads() == 3
    assert fattn.build_info()["num_threads"] == 3


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("2", TypeError),
                                      (True, TypeError)])
def test_set_num_threads_rejects(bad, exc, restore_threads):
    with pytest.raises(exc, match="n"):
        fattn.set_num_threads(bad)


def test_public_names():
    for name in ("sdpa", "reference", "set_num_threads", "get_num_threads", "build_info", "round_to"):
        assert hasattr(fattn, name)
    assert callable(fattn.reference.attention) and callable(fattn.reference.sdpa)
