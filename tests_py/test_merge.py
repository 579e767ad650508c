"""merge_attention against the exact float64 merge (fattn.reference.merge_attention) within the
bound numerics §6 derives (fattn.bounds.merge_bound)."""
import numpy as np
import pytest

import fattn
from fattn import bounds, reference


def parts(rng, n, rows, d, center, spread, empty_share):
    outs = [(rng.standard_normal((rows, d)) * rng.choice([1e-3, 1.0, 100.0], size=(rows, 1))).astype(np.float32)
            for _ in range(n)]
    lses = [(center + spread * rng.uniform(-1, 1, rows)).astype(np.float32) for _ in range(n)]
    for lse in lses:  # some parts saw no key in some rows
        lse[rng.uniform(size=rows) < empty_share] = -np.inf
    return outs, lses


@pytest.mark.parametrize("n", [1, 2, 3, 5, 11])
@pytest.mark.parametrize("center", [0.0, 10.0, -500.0, 1000.0])
def test_merge_is_within_the_derived_bound_of_the_exact_merge(rng, n, center):
    outs, lses = parts(rng, n, rows=3000, d=24, center=center, spread=30.0, empty_share=0.2)
    got, got_lse = fattn.merge_attention(outs, lses, return_lse=True)
    want, want_lse = reference.merge_attention(outs, lses, return_lse=True)
    out_bound, lse_bound = bounds.merge_bound(outs, lses)
    ok, err, allowed = bounds.within(got, want, out_bound)
    assert ok.all(), f"worst err/allowed {np.max(err / allowed):.3f}"
    empty = np.isneginf(want_lse)
    assert (got[empty] == 0).all() and np.isneginf(got_lse[empty]).all()
    lse_err = np.abs(got_lse[~empty].astype(np.float64) - want_lse[~empty])
    assert (lse_err <= lse_bound[~empty]).all(), f"worst LSE err/bound {np.max(lse_err / lse_bound[~empty]):.3f}"


def test_merge_bound_is_not_vacuous(rng):
    # The bound is a few f32 ulps of max|out|: a merge with one weight off by 2^-20 breaks it.
    outs, lses = parts(rng, 3, rows=500, d=16, center=0.0, spread=2.0, empty_share=0.0)
    want = reference.merge_attention(outs, lses)
    out_bound, _ = bounds.merge_bound(outs, lses)
    skewed = [lses[0] + np.float32(2.0 ** -20 * 8)] + lses[1:]
    wrong = reference.merge_attention(outs, skewed)
    assert not bounds.within(wrong.astype(np.float32), want, out_bound)[0].all()


@pytest.mark.parametrize("n", [1, 2, 5, 11])
@pytest.mark.parametrize("center", [0.0, -500.0, 1000.0])
def test_merge_with_sinks_is_within_the_derived_bound(rng, n, center):
    # [H = 6, rows, D]: one sink per head along axis -3 (head_axis=0), from far below the LSEs
    # to far above them (the output then vanishes), and -inf (no sink).
    outs, lses = parts(rng, n, rows=6 * 500, d=24, center=center, spread=30.0, empty_share=0.2)
    outs = [o.reshape(6, 500, 24) for o in outs]
    lses = [x.reshape(6, 500) for x in lses]
    sinks = (center + np.array([-200.0, -5.0, 0.0, 10.0, 60.0, -np.inf])).astype(np.float32)
    got, got_lse = fattn.merge_attention(outs, lses, sinks=sinks, head_axis=0, return_lse=True)
    want = reference.merge_attention(outs, lses, sinks=sinks, head_axis=0)
    out_bound, _ = bounds.merge_bound(outs, lses, sinks=sinks)
    ok, err, allowed = bounds.within(got, want, out_bound)
    assert ok.all(), f"worst err/allowed {np.max(err / allowed):.3f}"
    # the LSE stays the keys': the merge without sinks gives the same bits
    plain, plain_lse = fattn.merge_attention(outs, lses, return_lse=True)
    assert got_lse.tobytes() == plain_lse.tobytes()
    assert got[5].tobytes() == plain[5].tobytes()  # -inf: no sink, no bit changed
    # and the sinks matter: far outside the bound without them (where a sink is near the LSEs)
    assert not bounds.within(plain[2:4], want[2:4], out_bound[2:4])[0].all()


def test_merge_sinks_bound_is_not_vacuous(rng):
    outs, lses = parts(rng, 3, rows=500, d=16, center=0.0, spread=2.0, empty_share=0.0)
    sinks = np.array([0.5] * 500, np.float32)  # head axis -2 of [rows, D]: one head per row
    want = reference.merge_attention(outs, lses, sinks=sinks)
    out_bound, _ = bounds.merge_bound(outs, lses, sinks=sinks)
    wrong = reference.merge_attention(outs, lses, sinks=sinks + np.float32(2.0 ** -20 * 8))
    assert not bounds.within(wrong.astype(np.float32), want, out_bound)[0].all()
    got = fattn.merge_attention(outs, lses, sinks=sinks)
    assert bounds.within(got, want, out_bound)[0].all()


@pytest.mark.parametrize("d", [1, 7, 16, 40, 128, 129])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_merge_is_bit_identical_on_every_path(rng, d, n, restore_isa):
    """The weighted sums run on the decode family's vector path (the same fma chain per element,
    a vector of elements at a time, the tail masked): every path, emulated ones included, gives
    the scalar loop's bits, with and without sinks."""
    outs, lses = parts(rng, n, 67, d, 3.0, 20.0, 0.2)
    sinks = rng.standard_normal(67).astype(np.float32)
    fattn.set_isa("scalar")
    want = fattn.merge_attention(outs, lses, return_lse=True)
    want_sink = fattn.merge_attention([o[None] for o in outs], [lse[None] for lse in lses], sinks=sinks,
                                      head_axis=1)
    for isa in fattn.available_isas(include_emulated=True):
        fattn.set_isa(isa)
        got = fattn.merge_attention(outs, lses, return_lse=True)
        assert (got[0].view(np.uint32) == want[0].view(np.uint32)).all() and (got[1] == want[1]).all(), isa
        got_sink = fattn.merge_attention([o[None] for o in outs], [lse[None] for lse in lses], sinks=sinks,
                                         head_axis=1)
        assert (got_sink.view(np.uint32) == want_sink.view(np.uint32)).all(), isa
