"""Issue 19's prefill variants: q_offset, sliding windows, softcap and learned sinks, alone and
combined, against the float64 reference within fattn.bounds.prefill_bound, and the invariants
that must hold to the bit (chunks with q_offset = one call; skipped tiles = masked ones; every
vector path = the scalar model; the LSE ignores the sink)."""
import numpy as np
import pytest

import fattn
from fattn import reference
from helpers import BF16, DTYPES, F16, F32, prefill_exact_bound, random_inputs, within_exact_bound

PATHS = fattn.available_isas(include_emulated=True)  # "scalar" first: the model


def make(rng, dtype, b, h, h_kv, lq, lk, d, layout="bhld"):
    shapes = [(b, h, lq, d), (b, h_kv, lk, d), (b, h_kv, lk, d)]
    if layout == "blhd":
        shapes = [(s[0], s[2], s[1], s[3]) for s in shapes]
    return random_inputs(rng, dtype, *shapes)


def sinks_for(rng, h):
    return (rng.standard_normal(h) * 2).astype(np.float32)


def check_against_exact(q, k, v, layout="bhld", kernel="auto", causal=True, **variant):
    out, lse = fattn.flash_attn_prefill(q, k, v, causal=causal, layout=layout, kernel=kernel, return_lse=True,
                                        **variant)
    ref_args = {key: variant[key] for key in ("softcap", "window", "sinks") if key in variant}
    if causal or "window" in variant:  # positions matter
        align = "bottom_right" if causal == "bottom_right" else "top_left"
        ref_args.update(causal=align, q_offset=variant.get("q_offset", 0) if align == "top_left" else None)
    exact, exact_lse = reference.attention(q, k, v, layout=layout, return_lse=True, **ref_args)
    bound, e = prefill_exact_bound(q, k, v, causal=causal, kernel=kernel, layout=layout, **variant)
    ok, err, allowed = within_exact_bound(out, exact, bound)
    assert ok.all(), f"max error {err.max():.3g}, allowed {allowed[~ok].min():.3g} at {np.argwhere(~ok)[0]}"
    seen = np.isfinite(exact_lse)
    assert np.array_equal(np.isfinite(lse), seen)
    assert np.all(np.abs(lse[seen] - exact_lse[seen]) <= e[seen] + 2 ** -22 * (1 + np.abs(exact_lse[seen])))
    return out, lse


VARIANTS = [
    dict(q_offset=37),
    dict(window=1),
    dict(window=29),
    dict(window=29, q_offset=50),
    dict(softcap=4.0),
    dict(softcap=30.0, q_offset=9),
    dict(sinks="random"),
    dict(window=40, softcap=5.0, sinks="random", q_offset=23),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v))
@pytest.mark.parametrize("d,h,h_kv,layout", [(64, 4, 2, "bhld"), (80, 2, 2, "blhd"), (256, 2, 1, "bhld")])
def test_candle_variants_within_the_bound(dtype, variant, d, h, h_kv, layout):
    rng = np.random.default_rng(d + h * 7 + len(variant))
    lq = 45
    lk = lq + variant.get("q_offset", 0) + 6  # keys past the last query's position: causal hides them
    q, k, v = make(rng, dtype, 2, h, h_kv, lq, lk, d, layout)
    if variant.get("sinks") == "random":
        variant = dict(variant, sinks=sinks_for(rng, h))
    check_against_exact(q, k, v, layout=layout, **variant)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", [dict(sinks="random"), dict(window=70, q_offset=30), dict(softcap=10.0),
                                     dict(window=100, softcap=8.0, sinks="random", q_offset=64)],
                         ids=lambda v: "-".join(v))
def test_llamacpp_variants_within_the_bound(dtype, variant):
    rng = np.random.default_rng(512)
    q, k, v = make(rng, dtype, 1, 4, 2, 21, 21 + variant.get("q_offset", 0) + 70, 512)
    if variant.get("sinks") == "random":
        variant = dict(variant, sinks=sinks_for(rng, 4))
    check_against_exact(q, k, v, kernel="llamacpp", **variant)


@pytest.mark.parametrize("causal", [False, True, "bottom_right"])
def test_softcap_and_sinks_with_every_causal_form(causal):
    rng = np.random.default_rng(3)
    q, k, v = make(rng, F32, 1, 2, 2, 33, 50, 64)
    check_against_exact(q, k, v, causal=causal, softcap=3.0, sinks=sinks_for(rng, 2))


def test_sinks_of_minus_infinity_change_no_bit_and_the_lse_ignores_the_sink():
    rng = np.random.default_rng(4)
    q, k, v = make(rng, BF16, 1, 3, 1, 40, 40, 64)
    plain, plain_lse = fattn.flash_attn_prefill(q, k, v, causal=True, return_lse=True)
    none, none_lse = fattn.flash_attn_prefill(q, k, v, causal=True, return_lse=True,
                                              sinks=np.full(3, -np.inf, dtype=np.float32))
    assert np.array_equal(plain.view(np.uint16), none.view(np.uint16))
    sunk, sunk_lse = fattn.flash_attn_prefill(q, k, v, causal=True, return_lse=True,
                                              sinks=np.array([0.0, 2.0, -np.inf], dtype=np.float32))
    assert np.array_equal(plain_lse, sunk_lse)  # over the keys only
    assert np.array_equal(plain[:, 2], sunk[:, 2])  # the head without a sink
    # With the sink, every weight shrinks by the same factor: out = plain * e^lse / (e^lse + e^sink).
    factor = 1.0 / (1.0 + np.exp(np.array([0.0, 2.0])[None, :, None] - plain_lse[:, :2].astype(np.float64)))
    np.testing.assert_allclose(sunk[:, :2].astype(np.float64), plain[:, :2].astype(np.float64) * factor[..., None],
                               rtol=2 ** -6, atol=2 ** -7)


def test_a_row_that_sees_no_key_stays_zero_with_a_sink():
    rng = np.random.default_rng(5)
    q, k, v = make(rng, F32, 1, 2, 2, 6, 10, 64)
    mask = np.zeros((6, 10), dtype=bool)
    out, lse = fattn.flash_attn_prefill(q, k, v, mask, return_lse=True, sinks=np.array([1.0, -3.0], dtype=np.float32))
    assert np.all(out == 0) and np.all(np.isneginf(lse))
    # Also a causal row before the first key (bottom_right with Lq > Lk).
    q2 = np.concatenate([q, q], axis=2)
    out, lse = fattn.flash_attn_prefill(q2, k, v, causal="bottom_right", return_lse=True,
                                        sinks=np.array([30.0, -3.0], dtype=np.float32))
    assert np.all(out[:, :, :2] == 0) and np.all(np.isneginf(lse[:, :, :2])) and np.all(np.isfinite(lse[:, :, 2:]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel,d", [("candle", 64), ("candle", 512), ("llamacpp", 512)])
def test_chunks_with_q_offset_equal_the_one_shot_call(dtype, kernel, d):
    """A long prompt prefilled in chunks against the keys so far (a growing cache) gives the bits
    of one causal call over the whole prompt, windows, softcap and sinks included."""
    rng = np.random.default_rng(d + len(kernel))
    lq = 150
    q, k, v = make(rng, dtype, 1, 4, 2, lq, lq, d)
    variant = dict(window=57, softcap=6.0, sinks=sinks_for(rng, 4))
    for extra in (dict(), variant):
        whole, whole_lse = fattn.flash_attn_prefill(q, k, v, causal=True, kernel=kernel, return_lse=True, **extra)
        start = 0
        for size in (1, 40, 13, 64, 32):
            end = start + size
            part, part_lse = fattn.flash_attn_prefill(q[:, :, start:end], k[:, :, :end], v[:, :, :end], causal=True,
                                                      q_offset=start, kernel=kernel, return_lse=True, **extra)
            assert np.array_equal(part.view(np.uint8), whole[:, :, start:end].view(np.uint8)), (start, end)
            assert np.array_equal(part_lse, whole_lse[:, :, start:end])
            start = end
        assert start == lq


@pytest.mark.parametrize("kernel,d", [("candle", 64), ("candle", 256), ("llamacpp", 512)])
@pytest.mark.parametrize("q_offset", [0, 45])
def test_window_tile_skipping_equals_the_same_window_as_a_mask(kernel, d, q_offset):
    """Tiles wholly outside the window are not visited; the bits are those of the plain call with
    the window given as a bool mask (which visits every tile)."""
    rng = np.random.default_rng(d + q_offset)
    lq, lk, window = 100, 100 + q_offset, 24
    q, k, v = make(rng, F16, 1, 2, 1, lq, lk, d)
    position = np.arange(lq)[:, None] + q_offset
    key = np.arange(lk)[None, :]
    as_mask = (key <= position) & (key > position - window)
    windowed = fattn.flash_attn_prefill(q, k, v, window=window, q_offset=q_offset, kernel=kernel)
    masked = fattn.flash_attn_prefill(q, k, v, as_mask, kernel=kernel)
    assert np.array_equal(windowed.view(np.uint16), masked.view(np.uint16))
    also_causal = fattn.flash_attn_prefill(q, k, v, causal=True, window=window, q_offset=q_offset, kernel=kernel)
    assert np.array_equal(windowed.view(np.uint16), also_causal.view(np.uint16))


def test_a_window_wider_than_every_position_is_plain_causal():
    rng = np.random.default_rng(6)
    q, k, v = make(rng, F32, 1, 2, 2, 50, 70, 64)
    causal = fattn.flash_attn_prefill(q, k, v, causal=True, q_offset=20)
    for window in (70, 71, 10 ** 9):
        assert np.array_equal(causal, fattn.flash_attn_prefill(q, k, v, window=window, q_offset=20))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel,d,lq", [("candle", 64, 77), ("candle", 128, 5), ("candle", 256, 40),
                                         ("llamacpp", 512, 19)])
def test_every_path_equals_the_scalar_model(restore_isa, dtype, kernel, d, lq):
    rng = np.random.default_rng(d + lq)
    q, k, v = make(rng, dtype, 1, 4, 2, lq, lq + 70, d)
    variants = [dict(window=33, q_offset=70), dict(softcap=2.5, causal=True),
                dict(sinks=sinks_for(rng, 4), causal="bottom_right"),
                dict(window=50, softcap=7.0, sinks=sinks_for(rng, 4), q_offset=61)]
    for variant in variants:
        results = {}
        for isa in PATHS:
            fattn.set_isa(isa)
            results[isa] = fattn.flash_attn_prefill(q, k, v, kernel=kernel, return_lse=True, **variant)
        want, want_lse = results["scalar"]
        for isa, (got, got_lse) in results.items():
            assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (isa, list(variant))
            assert np.array_equal(got_lse, want_lse), (isa, list(variant))


def test_the_reference_model_follows_the_variants():
    rng = np.random.default_rng(8)
    for kernel, d in (("candle", 64), ("llamacpp", 512)):
        q, k, v = make(rng, F16, 1, 2, 1, 30, 60, d)
        variant = dict(window=20, softcap=4.0, sinks=sinks_for(rng, 2), q_offset=30)
        got, got_lse = fattn.flash_attn_prefill(q, k, v, kernel=kernel, return_lse=True, **variant)
        model, model_lse = reference.flash_attn_prefill(q, k, v, kernel=kernel, return_lse=True, **variant)
        # The model rounds its dots and P·V once (numerics §4): a few f32 ulps, then the store.
        np.testing.assert_allclose(got.astype(np.float64), model.astype(np.float64), rtol=0, atol=2 ** -10)
        np.testing.assert_allclose(got_lse, model_lse, rtol=2 ** -20, atol=2 ** -20)


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(window=0), ValueError, "window"),
    (dict(window=-3), ValueError, "window"),
    (dict(window=2.5), TypeError, "window"),
    (dict(q_offset=-1), ValueError, "q_offset"),
    (dict(q_offset=4, causal="bottom_right"), ValueError, "q_offset"),
    (dict(q_offset=2 ** 40), ValueError, "q_offset"),
    (dict(softcap=-1.0), ValueError, "softcap"),
    (dict(softcap=float("inf")), ValueError, "softcap"),
    (dict(softcap=float("nan")), ValueError, "softcap"),
    (dict(softcap="3"), TypeError, "softcap"),
    (dict(sinks=np.zeros(3, dtype=np.float32)), ValueError, "sinks"),
    (dict(sinks=np.zeros((2, 1), dtype=np.float32)), ValueError, "sinks"),
    (dict(sinks=np.zeros(2, dtype=np.float64)), TypeError, "sinks"),
    (dict(sinks=np.array([0.0, np.nan], dtype=np.float32)), ValueError, "sinks"),
    (dict(sinks=np.array([np.inf, 0.0], dtype=np.float32)), ValueError, "sinks"),
])
def test_bad_variant_arguments_are_named(kwargs, error, words):
    q, k, v = make(np.random.default_rng(9), F32, 1, 2, 1, 8, 8, 64)
    with pytest.raises(error, match=words):
        fattn.flash_attn_prefill(q, k, v, **kwargs)


def test_sinks_may_be_any_strided_float32_array():
    rng = np.random.default_rng(10)
    q, k, v = make(rng, F32, 1, 3, 3, 8, 8, 64)
    wide = np.arange(6, dtype=np.float32)
    assert np.array_equal(fattn.flash_attn_prefill(q, k, v, sinks=wide[::2]),
                          fattn.flash_attn_prefill(q, k, v, sinks=np.ascontiguousarray(wide[::2])))


def test_prefill_over_key_ranges_merges_with_the_sink_applied_once():
    """return_lse is over the keys only, so parts over disjoint key ranges (computed without the
    sink) merge with merge_attention(..., sinks=) into the one call with the sink."""
    rng = np.random.default_rng(11)
    q, k, v = make(rng, F32, 1, 4, 2, 24, 90, 64)
    sinks = sinks_for(rng, 4)
    whole = fattn.flash_attn_prefill(q, k, v, sinks=sinks)
    parts = [fattn.flash_attn_prefill(q, k[:, :, a:b], v[:, :, a:b], return_lse=True) for a, b in ((0, 37), (37, 90))]
    merged = fattn.merge_attention([p[0] for p in parts], [p[1] for p in parts], sinks=sinks)
    exact = reference.attention(q, k, v, sinks=sinks)
    budget = 1e-5 * np.abs(v).max()  # the f32 allowance (tests_py/helpers.f32_budget)
    np.testing.assert_allclose(merged, exact, rtol=0, atol=budget)
    np.testing.assert_allclose(merged, whole, rtol=0, atol=budget)
    assert np.abs(merged - fattn.flash_attn_prefill(q, k, v)).max() > 100 * budget  # the sink matters here
