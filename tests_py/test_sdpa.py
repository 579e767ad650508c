"""fattn.sdpa against the exact float64 reference and against the kernel-arithmetic reference."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F32, as64, bits, exact_tolerance, f32_budget, random_inputs, ulp

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


# --- softcap, window, sinks (issue 19) ------------------------------------------

# (softcap, window, with sinks): each alone, then combined; windows of 1, a few
# keys, and longer than any row's position.
OPTIONS = [(3.0, None, False), (0.0, 1, False), (0.0, 5, False), (0.0, 1000, False), (0.0, None, True),
           (3.0, 4, True), (1.5, 1, True), (0.0, 17, True)]


def options_id(o):
    softcap, window, sinks = o
    return f"cap{softcap:g}-w{window}-{'sinks' if sinks else 'nosinks'}"


def sink_values(rng, heads):
    """Sinks around the scores' range, one head without (-inf)."""
    s = (rng.standard_normal(heads) * 2 + 1).astype(np.float32)
    s[heads // 2] = -np.inf
    return s


def options_case(rng, shape, dtype, options, align, scale=1.0):
    b, h, h_kv, lq, kv_len, cap, d = shape
    softcap, window, with_sinks = options
    q, k, v = random_inputs(rng, dtype, (b, h, lq, d), (b, h_kv, cap, d), (b, h_kv, cap, d))
    q = (q.astype(np.float32) * scale).astype(dtype)  # larger scores, so that the softcap bites
    kwargs = dict(causal=align, kv_seq_len=kv_len, softcap=softcap, window=window,
                  sinks=sink_values(rng, h) if with_sinks else None)
    return q, k, v, kwargs


def exact_of(q, k, v, kwargs):
    kv_len = kwargs["kv_seq_len"]
    return reference.attention(q, k[:, :, :kv_len], v[:, :, :kv_len], causal=kwargs["causal"],
                               softcap=kwargs["softcap"], window=kwargs["window"], sinks=kwargs["sinks"])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=options_id)
@pytest.mark.parametrize("align", ["bottom_right", "top_left"])
def test_options_match_exact_reference(rng, shape, dtype, options, align):
    q, k, v, kwargs = options_case(rng, shape, dtype, options, align, scale=3.0)
    out = fattn.sdpa(q, k, v, **kwargs)
    exact = exact_of(q, k, v, kwargs)
    err = np.abs(as64(out) - exact)
    assert (err <= exact_tolerance(dtype, exact, v, softcap=kwargs["softcap"])).all(), f"max err {err.max():.3g}"


def test_each_option_changes_the_result(rng):
    """The option tests above can fail: each option, left out, moves the result well beyond the bound."""
    shape = (1, 4, 2, 12, 40, 40, 32)
    for options in [(3.0, None, False), (0.0, 5, False), (0.0, None, True)]:
        q, k, v, kwargs = options_case(rng, shape, F32, options, "bottom_right", scale=3.0)
        kwargs["sinks"] = None if kwargs["sinks"] is None else np.full(4, 2.0, np.float32)
        out = fattn.sdpa(q, k, v, **kwargs)
        plain = fattn.sdpa(q, k, v, causal="bottom_right", kv_seq_len=40)
        assert np.abs(as64(out) - as64(plain)).max() > 100 * exact_tolerance(F32, plain, v, softcap=3.0).max()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=options_id)
def test_options_match_kernel_reference_more_tightly(rng, shape, dtype, options):
    # Unit-scale q, as in the plain test above: larger scores scale the dot-order difference up.
    q, k, v, kwargs = options_case(rng, shape, dtype, options, True)
    out = fattn.sdpa(q, k, v, **kwargs)
    model = reference.sdpa(q, k, v, **kwargs)
    diff = np.abs(as64(out) - as64(model))
    # As above, plus the tanh implementation (fattn's vs NumPy's): a few ulps of the capped score.
    extra = 8 * 2.0 ** -24 * kwargs["softcap"] * float(np.abs(as64(v)).max())
    if dtype == F32:
        assert diff.max() <= 0.1 * f32_budget(v) + extra, diff.max()
    else:
        assert (diff <= ulp(as64(model), dtype) + 0.05 * f32_budget(v) + extra).all()
        assert (diff == 0).mean() >= 0.99


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("align", ["bottom_right", "top_left"])
def test_window_of_one_gives_the_value_at_the_row_position(rng, dtype, align):
    lq, kv_len = 11, 8
    q, k, v = random_inputs(rng, dtype, (2, 4, lq, 16), (2, 2, kv_len, 16), (2, 2, kv_len, 16))
    out = fattn.sdpa(q, k, v, causal=align, window=1)
    offset = kv_len - lq if align == "bottom_right" else 0
    for i in range(lq):
        pos = i + offset
        want = np.repeat(v[:, :, pos], 2, axis=1) if 0 <= pos < kv_len else np.zeros((2, 4, 16), dtype)
        assert (bits(out[:, :, i]) == bits(want)).all(), i  # one key: l = 1, acc = 1 * v, out = v * 1


@pytest.mark.parametrize("align", ["bottom_right", "top_left"])
def test_window_covering_every_position_is_no_window(rng, align):
    q, k, v = random_inputs(rng, BF16, (1, 4, 37, 40), (1, 2, 45, 40), (1, 2, 45, 40))
    base = fattn.sdpa(q, k, v, causal=align, softcap=4.0)
    reach = 45 if align == "bottom_right" else 37  # the last row's position + 1: its window to see every key
    for window in [reach, 45, 46, 10 ** 6, 2 ** 63 - 1]:
        assert (bits(fattn.sdpa(q, k, v, causal=align, softcap=4.0, window=window)) == bits(base)).all(), window
    assert (bits(fattn.sdpa(q, k, v, causal=align, softcap=4.0, window=reach - 1)) != bits(base)).any()


def test_sink_of_minus_inf_is_no_sink(rng):
    q, k, v = random_inputs(rng, F32, (2, 4, 9, 32), (2, 2, 20, 32), (2, 2, 20, 32))
    base = fattn.sdpa(q, k, v, window=6)
    sinks = np.full(4, -np.inf, np.float32)
    assert (bits(fattn.sdpa(q, k, v, window=6, sinks=sinks)) == bits(base)).all()
    sinks[1] = 0.5  # only head 1 changes
    got = fattn.sdpa(q, k, v, window=6, sinks=sinks)
    assert (bits(got[:, [0, 2, 3]]) == bits(base[:, [0, 2, 3]])).all()
    assert (got[:, 1] != base[:, 1]).any()


def test_sink_shrinks_the_output_and_rows_without_keys_stay_zero(rng):
    q, k, v = random_inputs(rng, F32, (1, 2, 6, 8), (1, 1, 3, 8), (1, 1, 3, 8))
    sinks = np.array([60.0, -5.0], np.float32)
    out = fattn.sdpa(q, k, v, sinks=sinks)
    assert (out[0, :, :3] == 0).all() and not np.isnan(out).any()  # rows 0..2 sit before the first key
    assert np.abs(out[0, 0]).max() < 1e-20  # e^60 against e^{O(1)}: the sink takes almost all the weight
    exact = reference.attention(q, k, v, causal="bottom_right", sinks=sinks)
    assert (np.abs(as64(out) - exact) <= exact_tolerance(F32, exact, v)).all()


def test_sinks_read_through_any_stride(rng):
    q, k, v = random_inputs(rng, F32, (1, 4, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8))
    sinks = np.arange(8, dtype=np.float32) / 4
    assert (bits(fattn.sdpa(q, k, v, sinks=sinks[::2])) == bits(fattn.sdpa(q, k, v, sinks=sinks[::2].copy()))).all()


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), h_kv=st.integers(1, 3), group=st.sampled_from([1, 2, 4]), lq=st.integers(1, 40),
       kv_len=st.integers(1, 40), spare=st.integers(0, 5), d=st.sampled_from([1, 3, 8, 17, 64]),
       align=st.sampled_from(["bottom_right", "top_left"]), softcap=st.sampled_from([0.0, 0.5, 3.0, 50.0]),
       window=st.one_of(st.none(), st.integers(1, 45)), with_sinks=st.booleans(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2 ** 32 - 1))
def test_property_any_shape_and_options_match_exact(b, h_kv, group, lq, kv_len, spare, d, align, softcap, window,
                                                    with_sinks, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = (b, h_kv * group, h_kv, lq, kv_len, kv_len + spare, d)
    q, k, v, kwargs = options_case(rng, shape, dtype, (softcap, window, with_sinks), align, scale=2.0)
    out = fattn.sdpa(q, k, v, **kwargs)
    exact = exact_of(q, k, v, kwargs)
    assert (np.abs(as64(out) - exact) <= exact_tolerance(dtype, exact, v, softcap=softcap)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softcap_saturates_an_infinite_score_to_the_cap(rng, dtype):
    """tanh rounds to exactly 1 from about 9 on: a +inf dot and a merely huge one give the same
    score, c, so the same bits (without the cap the +inf one would make the row NaN)."""
    q = np.abs(random_inputs(rng, dtype, (1, 2, 4, 16))[0]) + np.asarray(0.5, dtype)
    k, v = random_inputs(rng, dtype, (1, 1, 6, 16), (1, 1, 6, 16))
    huge, infinite = k.copy(), k.copy()
    huge[:, :, 2], infinite[:, :, 2] = 1000, np.inf
    capped = fattn.sdpa(q, infinite, v, softcap=2.0)
    assert not np.isnan(capped).any()
    assert (bits(capped) == bits(fattn.sdpa(q, huge, v, softcap=2.0))).all()
    assert np.isnan(fattn.sdpa(q, infinite, v)[:, :, 1:]).all()  # rows 1.. see key 2
