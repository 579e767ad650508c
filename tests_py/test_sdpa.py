"""fattn.sdpa against the exact float64 reference and against the kernel-arithmetic reference."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F32, as64, exact_tolerance, f32_budget, random_inputs, ulp

# (B, H, H_kv, Lq, kv_seq_len, capacity, D)
SHAPES = [
    (1, 1, 1, 1, 1, 1, 8),
    (1, 2, 1, 1, 37, 64, 16),      # decode-like: one query, KV cache with spare capacity
    (2, 4, 2, 7, 7, 7, 64),        # Lq == kv_seq_len
    (3, 8, 1, 5, 33, 40, 32),      # GQA 8, batch 3
    (1, 8, 2, 33, 100, 128, 128),  # GQA 4
    (2, 4, 4, 3, 50, 50, 512),
    (1, 2, 2, 10, 4, 6, 24),       # Lq > kv_seq_len: the first rows see no key
    (2, 16, 2, 4, 17, 20, 256),    # GQA 8
    (1, 6, 3, 16, 16, 16, 80),     # GQA 2
    (1, 4, 1, 9, 300, 301, 40),
]


def run_case(rng, shape, dtype, causal):
    b, h, h_kv, lq, kv_len, cap, d = shape
    q, k, v = random_inputs(rng, dtype, (b, h, lq, d), (b, h_kv, cap, d), (b, h_kv, cap, d))
    out = fattn.sdpa(q, k, v, causal=causal, kv_seq_len=kv_len)
    return q, k[:, :, :kv_len], v[:, :, :kv_len], out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_matches_exact_reference(rng, shape, dtype, causal):
    q, k, v, out = run_case(rng, shape, dtype, causal)
    assert out.dtype == dtype and out.shape == q.shape
    exact = reference.attention(q, k, v, causal="bottom_right" if causal else None)
    err = np.abs(as64(out) - exact)
    assert (err <= exact_tolerance(dtype, exact, v)).all(), f"max err {err.max():.3g}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_kernel_reference_more_tightly(rng, shape, dtype):
    b, h, h_kv, lq, kv_len, cap, d = shape
    q, k, v = random_inputs(rng, dtype, (b, h, lq, d), (b, h_kv, cap, d), (b, h_kv, cap, d))
    out = fattn.sdpa(q, k, v, kv_seq_len=kv_len)
    model = reference.sdpa(q, k, v, kv_seq_len=kv_len)
    diff = np.abs(as64(out) - as64(model))
    if dtype == F32:
        # Same steps; only the dot-product order and the exp implementation differ.
        assert diff.max() <= 0.1 * f32_budget(v), diff.max()
    else:
        # At most one ulp apart (plus the f32 difference, which matters only
        # for outputs tiny against max|V|), and almost always identical.
        assert (diff <= ulp(as64(model), dtype) + 0.05 * f32_budget(v)).all()
        assert (diff == 0).mean() >= 0.99


def test_rows_before_the_first_key_are_zero(rng):
    q, k, v = random_inputs(rng, F32, (1, 1, 6, 8), (1, 1, 3, 8), (1, 1, 3, 8))
    out = fattn.sdpa(q, k, v)
    assert (out[0, 0, :3] == 0).all() and (out[0, 0, 3:] != 0).all()
    assert not np.isnan(out).any()


def test_capacity_beyond_kv_seq_len_is_never_read(rng):
    q, k, v = random_inputs(rng, BF16, (1, 2, 3, 16), (1, 1, 10, 16), (1, 1, 10, 16))
    clean = fattn.sdpa(q, k, v, kv_seq_len=6)
    k[:, :, 6:], v[:, :, 6:] = np.nan, np.inf
    assert (fattn.sdpa(q, k, v, kv_seq_len=6).view(np.uint16) == clean.view(np.uint16)).all()


def test_explicit_scale_and_default(rng):
    q, k, v = random_inputs(rng, F32, (1, 2, 4, 32), (1, 2, 4, 32), (1, 2, 4, 32))
    default = fattn.sdpa(q, k, v)
    explicit = fattn.sdpa(q, k, v, scale=np.float32(1) / np.sqrt(np.float32(32)))
    assert (default == explicit).all()
    sharp = fattn.sdpa(q, k, v, scale=1.0)
    exact = reference.attention(q, k, v, causal="bottom_right", scale=1.0)
    assert np.abs(sharp - exact).max() <= f32_budget(v)


def test_strided_inputs_give_the_same_bits(rng):
    q, k, v = random_inputs(rng, BF16, (2, 8, 6, 64), (2, 4, 9, 64), (2, 4, 9, 64))
    base = fattn.sdpa(q, k, v)
    # Every other head of a bigger array, and a seq-major array viewed head-major.
    q_big = np.zeros((2, 16, 6, 64), dtype=BF16)
    q_big[:, ::2] = q
    k_seq = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    assert not k_seq.flags.c_contiguous
    got = fattn.sdpa(q_big[:, ::2], k_seq, v)
    assert (got.view(np.uint16) == base.view(np.uint16)).all()
    # A non-contiguous head dim is copied, not misread.
    v_wide = np.zeros((2, 4, 9, 128), dtype=BF16)
    v_wide[..., ::2] = v
    assert (fattn.sdpa(q, k, v_wide[..., ::2]).view(np.uint16) == base.view(np.uint16)).all()


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_bit_identical_for_any_thread_count(rng, restore_threads, threads):
    q, k, v = random_inputs(rng, F32, (2, 4, 37, 64), (2, 2, 50, 64), (2, 2, 50, 64))
    fattn.set_num_threads(1)
    one = fattn.sdpa(q, k, v)
    fattn.set_num_threads(threads)
    assert fattn.get_num_threads() == threads
    assert (fattn.sdpa(q, k, v).view(np.uint32) == one.view(np.uint32)).all()


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), h_kv=st.integers(1, 3), group=st.sampled_from([1, 2, 4]), lq=st.integers(1, 12),
       kv_len=st.integers(1, 40), spare=st.integers(0, 5), d=st.sampled_from([1, 3, 8, 17, 64]),
       causal=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 32 - 1))
def test_property_any_shape_matches_exact(b, h_kv, group, lq, kv_len, spare, d, causal, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = (b, h_kv * group, h_kv, lq, kv_len, kv_len + spare, d)
    q, k, v, out = run_case(rng, shape, dtype, causal)
    exact = reference.attention(q, k, v, causal="bottom_right" if causal else None)
    assert (np.abs(as64(out) - exact) <= exact_tolerance(dtype, exact, v)).all()
