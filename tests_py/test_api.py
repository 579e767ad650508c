import numpy as np
import pytest

import fattn


def test_version_and_build_info():
    info = fattn.build_info()
    assert fattn.__version__ == info["version"] == "0.1.0"
    assert set(info) >= {"version", "compiler", "build_type", "cpu_features", "isa", "num_threads"}
    assert info["num_threads"] == fattn.get_num_threads() >= 1
    # One core's L1 data cache (the prefill's P·V batches are sized by it): the OS's figure or 32 KiB.
    assert isinstance(info["l1d_bytes"], int) and 4096 <= info["l1d_bytes"] <= 1 << 24


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


def test_bounds_module_is_public_and_can_fail():
    import ml_dtypes
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 40, 64)).astype(ml_dtypes.bfloat16) for _ in range(3))
    out = fattn.flash_attn_prefill(q, k, v, causal=True)
    exact = fattn.reference.attention(q, k, v, causal="top_left")
    bound, e = fattn.bounds.prefill_bound(q, k, v, causal=True)
    assert e.shape == (1, 2, 40) and fattn.bounds.within(out, exact, bound)[0].all()
    worse = (out.astype(np.float64) + 4 * bound + 0.01).astype(ml_dtypes.bfloat16)
    assert not fattn.bounds.within(worse, exact, bound)[0].any()
    assert (fattn.bounds.ulp([1.0, 3.0], np.float16) == [2.0 ** -10, 2.0 ** -9]).all()
    with pytest.raises(TypeError, match="dtype: must be one of"):
        fattn.bounds.ulp([1.0], np.float64)
