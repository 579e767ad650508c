"""Issue 21's packed variable-length prefill: each sequence of a flash_attn_varlen call is, bit for
bit, flash_attn_prefill on that sequence alone (causal bottom-right per sequence), over random mixes
of lengths (empty, length 1, Lq > Lk), the variants, GQA, every dtype, both kernels, every vector
path and thread count; one check against the float64 reference within fattn.bounds.prefill_bound."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F16, F32, bits, prefill_exact_bound, random_inputs, within_exact_bound

PATHS = fattn.available_isas(include_emulated=True)  # "scalar" first: the model


def packed(rng, dtype, lengths_q, lengths_k, h, h_kv, d):
    """q [total_q, H, D], k, v [total_k, H_kv, D] and the int32 offsets of the given lengths."""
    cu_q = np.concatenate([[0], np.cumsum(lengths_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lengths_k)]).astype(np.int32)
    q, k, v = random_inputs(rng, dtype, (int(cu_q[-1]), h, d), (int(cu_k[-1]), h_kv, d), (int(cu_k[-1]), h_kv, d))
    return q, k, v, cu_q, cu_k


def alignment(causal, window):
    """The per-sequence prefill's causal argument for a varlen call's (causal, window)."""
    if causal is True or (causal is False and window is not None):
        return "bottom_right"  # varlen's own alignment; a window implies causal
    return causal


def per_sequence(q, k, v, cu_q, cu_k, causal=False, **variant):
    """flash_attn_prefill on each sequence alone (layout="blhd"), packed back: (out, lse)."""
    out = np.zeros_like(q)
    lse = np.full(q.shape[:2], -np.inf, dtype=np.float32)
    for b in range(len(cu_q) - 1):
        (a, e), (ka, ke) = (int(cu_q[b]), int(cu_q[b + 1])), (int(cu_k[b]), int(cu_k[b + 1]))
        if e == a or ke == ka:
            continue  # no rows, or no keys: rows of 0 with LSE -inf (what a row that sees no key gives)
        o, ls = fattn.flash_attn_prefill(q[None, a:e], k[None, ka:ke], v[None, ka:ke], layout="blhd",
                                         causal=alignment(causal, variant.get("window")), return_lse=True, **variant)
        out[a:e] = o[0]
        lse[a:e] = ls[0].T
    return out, lse


def assert_same_bits(got, want, where=""):
    (out, lse), (want_out, want_lse) = got, want
    assert np.array_equal(bits(out), bits(want_out)), where
    assert np.array_equal(bits(lse), bits(want_lse)), where


lengths = st.integers(0, 70) | st.sampled_from([0, 1, 31, 32, 33, 64])


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(lengths, lengths), min_size=0, max_size=6),
       causal=st.sampled_from([False, True, "top_left"]),
       variant=st.sampled_from(["plain", "window", "softcap", "sinks", "all"]),
       dtype=st.sampled_from(DTYPES), gqa=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_each_sequence_equals_its_own_prefill_call(pairs, causal, variant, dtype, gqa, seed):
    rng = np.random.default_rng(seed)
    h, h_kv, d = 4, 2 if gqa else 4, 64
    q, k, v, cu_q, cu_k = packed(rng, dtype, [p[0] for p in pairs], [p[1] for p in pairs], h, h_kv, d)
    kw = {}
    if variant in ("window", "all"):
        kw["window"] = int(rng.integers(1, 40))
    if variant in ("softcap", "all"):
        kw["softcap"] = 5.0
    if variant in ("sinks", "all"):
        kw["sinks"] = rng.standard_normal(h).astype(np.float32)
    got = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=causal, return_lse=True, **kw)
    assert got[0].shape == q.shape and got[0].dtype == q.dtype and got[1].shape == (q.shape[0], h)
    assert_same_bits(got, per_sequence(q, k, v, cu_q, cu_k, causal=causal, **kw))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel,d", [("candle", 64), ("candle", 80), ("candle", 256), ("llamacpp", 512)])
def test_every_path_gives_the_scalar_model_of_each_sequence(restore_isa, dtype, kernel, d):
    """Lengths on both sides of the short-query class (<= 8 rows) and of the 32-row vector groups,
    an empty sequence each side, Lq > Lk, length 1: each path's varlen call equals the scalar
    model's per-sequence calls."""
    rng = np.random.default_rng(d + len(kernel))
    lq, lk = [5, 0, 40, 1, 70, 3, 33], [9, 4, 40, 1, 20, 0, 100]
    q, k, v, cu_q, cu_k = packed(rng, dtype, lq, lk, 4, 2, d)
    variants = [dict(causal=True), dict(causal=False), dict(causal=True, window=17, softcap=6.0,
                                                             sinks=rng.standard_normal(4).astype(np.float32))]
    for variant in variants:
        fattn.set_isa("scalar")
        want = per_sequence(q, k, v, cu_q, cu_k, kernel=kernel, **variant)
        for isa in PATHS:
            fattn.set_isa(isa)
            got = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, kernel=kernel, return_lse=True, **variant)
            assert_same_bits(got, want, (isa, list(variant)))


def test_thread_counts_give_the_same_bits(restore_threads):
    rng = np.random.default_rng(1)
    q, k, v, cu_q, cu_k = packed(rng, BF16, [100, 7, 0, 64, 250], [120, 7, 3, 0, 250], 8, 2, 128)
    results = []
    for threads in (1, 2, 3):
        fattn.set_num_threads(threads)
        results.append(fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True, return_lse=True))
    for got in results[1:]:
        assert_same_bits(got, results[0])
    assert_same_bits(results[0], per_sequence(q, k, v, cu_q, cu_k, causal=True))


def test_rows_that_see_no_key_are_zero_with_lse_minus_infinity():
    rng = np.random.default_rng(2)
    # Sequence 0: Lq = 6 > Lk = 2 (bottom-right: its first 4 rows see nothing); 1: no keys; 2: no queries.
    q, k, v, cu_q, cu_k = packed(rng, F32, [6, 3, 0], [2, 0, 5], 2, 2, 64)
    out, lse = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True, return_lse=True,
                                       sinks=np.array([3.0, -1.0], dtype=np.float32))
    blind = np.r_[0:4, 6:9]
    assert np.all(out[blind] == 0) and np.all(np.isneginf(lse[blind]))
    assert np.all(np.isfinite(lse[4:6])) and np.any(out[4:6] != 0)


@pytest.mark.parametrize("cu_dtype", [np.int32, np.int64])
def test_out_strided_inputs_and_offset_dtypes(cu_dtype):
    rng = np.random.default_rng(3)
    q, k, v, cu_q, cu_k = packed(rng, F16, [10, 20, 5], [30, 20, 1], 4, 2, 64)
    want = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True)
    # Inputs read in place through other strides: q inside a wider array, k and v head-major in memory.
    wide = np.zeros((q.shape[0], 6, 64), dtype=F16)
    wide[:, 1:5] = q
    k_hm, v_hm = (np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2) for x in (k, v))
    out = np.empty((q.shape[0], 4, 128), dtype=F16)[:, :, :64]  # strided out
    got = fattn.flash_attn_varlen(wide[:, 1:5], k_hm, v_hm, cu_q.astype(cu_dtype), cu_k.astype(cu_dtype)[::1],
                                  causal=True, out=out)
    assert got is out
    assert np.array_equal(bits(out), bits(want))
    # Offsets through a stride of their own.
    every_other = np.repeat(cu_q.astype(cu_dtype), 2)[::2]
    assert np.array_equal(bits(fattn.flash_attn_varlen(q, k, v, every_other, cu_k, causal=True)), bits(want))


def test_no_sequences_and_no_rows():
    rng = np.random.default_rng(4)
    q, k, v = random_inputs(rng, F32, (0, 2, 64), (0, 2, 64), (0, 2, 64))
    out, lse = fattn.flash_attn_varlen(q, k, v, np.zeros(1, np.int32), np.zeros(1, np.int32), return_lse=True)
    assert out.shape == (0, 2, 64) and lse.shape == (0, 2)
    out, lse = fattn.flash_attn_varlen(q, k, v, np.zeros(4, np.int64), np.zeros(4, np.int64), return_lse=True)
    assert out.shape == (0, 2, 64)


@pytest.mark.parametrize("causal", [False, True])
def test_within_the_bound_of_the_float64_answer(causal):
    rng = np.random.default_rng(5)
    lq, lk = [37, 1, 90, 12], [50, 1, 90, 4]
    q, k, v, cu_q, cu_k = packed(rng, BF16, lq, lk, 4, 2, 64)
    sinks = rng.standard_normal(4).astype(np.float32)
    out, lse = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=causal, softcap=8.0, sinks=sinks, return_lse=True)
    align = "bottom_right" if causal else False
    for b in range(len(lq)):
        a, e, ka, ke = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        args = (q[None, a:e], k[None, ka:ke], v[None, ka:ke])
        exact, exact_lse = reference.attention(*args, layout="blhd", causal=align or None, softcap=8.0, sinks=sinks,
                                               return_lse=True)
        bound, err = prefill_exact_bound(*args, layout="blhd", causal=align, softcap=8.0, sinks=sinks)
        ok, diff, allowed = within_exact_bound(out[None, a:e], exact, bound)
        assert ok.all(), (b, diff.max())
        seen = np.isfinite(exact_lse[0])
        got_lse = lse[a:e].T
        assert np.array_equal(np.isfinite(got_lse), seen)
        assert np.all(np.abs(got_lse[seen] - exact_lse[0][seen]) <= err[0][seen] + 2 ** -22 * (1 + np.abs(exact_lse[0][seen])))


def test_causal_is_bottom_right_per_sequence():
    """causal=True and causal="bottom_right" are one call; "top_left" differs where Lq != Lk and
    equals the per-sequence top-left call."""
    rng = np.random.default_rng(6)
    q, k, v, cu_q, cu_k = packed(rng, F32, [10, 30], [25, 30], 2, 1, 64)
    assert np.array_equal(fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True),
                          fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal="bottom_right"))
    top = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal="top_left", return_lse=True)
    assert_same_bits(top, per_sequence(q, k, v, cu_q, cu_k, causal="top_left"))
    assert not np.array_equal(top[0][:10], fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True)[:10])


def test_the_numpy_twin_follows_the_call():
    # fattn.reference.flash_attn_varlen: reference.flash_attn_prefill on each sequence alone.
    rng = np.random.default_rng(3)
    cu_q, cu_k = np.array([0, 5, 5, 40, 41]), np.array([0, 9, 12, 30, 50])
    q = rng.standard_normal((41, 4, 64)).astype(F32)
    k, v = (rng.standard_normal((50, 2, 64)).astype(F32) for _ in range(2))
    for causal in (False, True):
        ours, ours_lse = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=causal, return_lse=True)
        ref, ref_lse = reference.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=causal, return_lse=True)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours_lse, ref_lse, rtol=1e-5, atol=1e-5)  # -inf where both are
