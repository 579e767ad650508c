"""Ring attention without the transport (fattn._ring, docs/numerics.md §10): the schedule covers
every visible (query, key) pair exactly once and sends each K/V block only as far as it is needed;
the per-rank arithmetic (the same code the distributed call runs) is within fattn.bounds.ring_bound
of the exact attention and, for a single part, bit for bit flash_attn_prefill. The distributed runs
themselves are tests_py/test_distributed.py (with torch)."""
import itertools

import ml_dtypes
import numpy as np
import pytest

import fattn
from fattn import _ring, bounds, reference


def visible_matrix(length, causal, window):
    p = np.arange(length)[:, None]
    t = np.arange(length)[None, :]
    seen = np.ones((length, length), bool)
    if causal or window is not None:
        seen &= t <= p
    if window is not None:
        seen &= t > p - window
    return seen


def coverage(lengths, order, causal, window):
    """How many parts compute each (query position, key position) pair — by each part's own mask,
    in its local coordinates (what flash_attn_prefill does with it) — and each rank's pairs."""
    segments = _ring.shard_segments(lengths, order)
    total = sum(lengths)
    count = np.zeros((total, total), int)
    work = []
    causal = causal or window is not None
    for rank in range(len(lengths)):
        pairs = 0
        for part in _ring.parts(rank, segments, causal, window):
            qs = segments[rank][part.q_seg]
            rows = np.arange(qs.start + part.row_begin, qs.start + part.row_end)
            block_positions = np.concatenate([np.arange(k.start, k.start + k.length) for k in segments[part.block]])
            keys = block_positions[part.key_begin:part.key_end]
            i = np.arange(len(rows))[:, None]
            t = np.arange(len(keys))[None, :]
            seen = np.ones((len(rows), len(keys)), bool)
            if part.causal:
                seen &= t <= part.q_offset + i
                if window is not None:
                    seen &= t > part.q_offset + i - window
            count[np.ix_(rows, keys)] += seen
            pairs += seen.sum()
        work.append(pairs)
    return count, work


@pytest.mark.parametrize("lengths,order", [([8], "contiguous"), ([5, 11], "contiguous"), ([8, 8, 8], "contiguous"),
                                           ([3, 1, 7, 2], "contiguous"), ([6, 6], "zigzag"), ([4] * 4, "zigzag"),
                                           ([2] * 5, "zigzag")])
@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 1), (True, 5), (False, 9)])
def test_every_visible_pair_is_computed_once(lengths, order, causal, window):
    count, _ = coverage(lengths, order, causal, window)
    seen = visible_matrix(sum(lengths), causal, window)
    assert (count == seen).all()


@pytest.mark.parametrize("world", [1, 2, 3, 4, 6])
def test_blocks_travel_only_as_far_as_needed(world):
    segs = _ring.shard_segments([8] * world, "contiguous")
    full = [_ring.blocks_sent(r, segs, False, None) for r in range(world)]
    causal = [_ring.blocks_sent(r, segs, True, None) for r in range(world)]
    assert [len(b) for b in full] == [world - 1] * world  # every block visits every other rank
    # causal: block j stops at the last rank, so rank r forwards blocks r, r-1, ..., 0 (the last rank none)
    assert causal == [list(range(r, -1, -1)) if r < world - 1 else [] for r in range(world)]
    assert sum(len(b) for b in causal) == world * (world - 1) // 2
    # a window of at most one shard: each block goes one rank forward, and no further
    windowed = [_ring.blocks_sent(r, segs, True, 8) for r in range(world)]
    assert windowed == [[r] if r < world - 1 else [] for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_zigzag_balances_causal_work(world):
    _, contiguous = coverage([16] * world, "contiguous", True, None)
    _, zigzag = coverage([16] * world, "zigzag", True, None)
    assert len(set(zigzag)) == 1 and sum(zigzag) == sum(contiguous)
    assert contiguous[-1] > 1.3 * np.mean(contiguous)  # what zigzag fixes (about 2W / (W + 1))


def test_bad_orders_and_zigzag_lengths():
    with pytest.raises(ValueError, match="order: expected one of"):
        _ring.shard_segments([4, 4], "striped")
    with pytest.raises(ValueError, match="same, even number of positions"):
        _ring.shard_segments([4, 6], "zigzag")
    with pytest.raises(ValueError, match="same, even number of positions"):
        _ring.shard_segments([5, 5], "zigzag")
    with pytest.raises(ValueError, match="every shard needs at least one position"):
        _ring.shard_segments([0, 6], "contiguous")


def gathered(results, lengths, order, dtype):
    """The whole sequence from the ranks' (local-order) outputs, rounded to the I/O type."""
    segments = _ring.shard_segments(lengths, order)
    b, h, _, d = results[0][0].shape
    out = np.zeros((b, h, sum(lengths), d), np.float32)
    for rank, (o, _) in enumerate(results):
        for s in segments[rank]:
            out[:, :, s.start:s.start + s.length] = o[:, :, s.offset:s.offset + s.length]
    return out.astype(dtype)


CASES = [
    # (dtype, B, H, H_kv, lengths, D, order, causal, window, softcap, sinks)
    (np.float32, 1, 2, 2, [40, 40], 64, "contiguous", False, None, 0.0, False),
    (np.float32, 2, 4, 2, [33, 17, 50], 64, "contiguous", True, None, 0.0, False),
    (ml_dtypes.bfloat16, 1, 4, 1, [48, 48], 128, "contiguous", True, None, 0.0, True),
    (ml_dtypes.bfloat16, 1, 2, 2, [24] * 4, 64, "zigzag", True, None, 0.0, False),
    (np.float16, 1, 2, 1, [37, 5, 64, 21], 64, "contiguous", True, 30, 0.0, False),
    (ml_dtypes.bfloat16, 1, 2, 2, [32, 32], 64, "contiguous", False, None, 20.0, True),
    (np.float32, 1, 8, 2, [20, 20, 20], 80, "zigzag", True, 17, 15.0, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{np.dtype(c[0]).name}-{c[4]}-{c[6]}-c{int(c[7])}-w{c[8]}")
def test_rank_arithmetic_within_ring_bound(case, rng):
    dtype, b, h, hkv, lengths, d, order, causal, window, softcap, with_sinks = case
    total = sum(lengths)
    q = rng.standard_normal((b, h, total, d)).astype(dtype)
    k = rng.standard_normal((b, hkv, total, d)).astype(dtype)
    v = rng.standard_normal((b, hkv, total, d)).astype(dtype)
    sinks = rng.standard_normal(h).astype(np.float32) if with_sinks else None
    kw = dict(causal=causal, window=window, softcap=softcap, sinks=sinks)
    out = gathered(_ring.simulate(q, k, v, lengths, order=order, **kw), lengths, order, dtype)
    flag = causal or window is not None
    exact = reference.attention(q, k, v, causal="top_left" if flag else None, window=window, softcap=softcap,
                                sinks=sinks)
    bound = bounds.ring_bound(q, k, v, world_size=len(lengths), order=order, lengths=lengths, **kw)
    ok, err, allowed = bounds.within(out, exact, bound)
    assert ok.all(), f"worst err/allowed {(err / allowed).max():.3g}"
    # not vacuous: about the one-process call's own bound, and a real error is caught
    single_bound, _ = bounds.prefill_bound(q, k, v, causal=flag, window=window, softcap=softcap, sinks=sinks)
    assert (bound <= 1.5 * single_bound).all()
    worse = (out.astype(np.float64) + 3 * bound + 1e-3).astype(dtype)
    assert not bounds.within(worse, exact, bound)[0].any()
    # and the one-process kernel agrees within both bounds
    single = fattn.flash_attn_prefill(q, k, v, causal=flag, window=window, softcap=softcap, sinks=sinks)
    _, _, single_allowed = bounds.within(single, exact, single_bound)
    assert (np.abs(out.astype(np.float64) - single.astype(np.float64)) <= allowed + single_allowed).all()


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_a_single_part_is_flash_attn_prefill_bit_for_bit(dtype, rng):
    q, k, v = (rng.standard_normal((1, 4, 50, 64)).astype(dtype) for _ in range(3))
    (out, lse), = _ring.simulate(q, k, v, [50], causal=True)
    o1, l1 = fattn.flash_attn_prefill(q, k, v, causal=True, return_lse=True)
    assert (out.astype(dtype).view(np.uint8) == o1.view(np.uint8)).all() and (lse == l1).all()
    # causal contiguous: rank 0 sees only its own block, one part per row
    results = _ring.simulate(q, k, v, [20, 30], causal=True)
    o0 = fattn.flash_attn_prefill(q[:, :, :20], k[:, :, :20], v[:, :, :20], causal=True)
    assert (results[0][0].astype(dtype).view(np.uint8) == o0.view(np.uint8)).all()


def test_ring_bound_checks_its_lengths(rng):
    q = rng.standard_normal((1, 1, 10, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="not divisible"):
        bounds.ring_bound(q, q, q, world_size=3)
    with pytest.raises(ValueError, match="lengths: expected 2 shard lengths adding up to 10"):
        bounds.ring_bound(q, q, q, world_size=2, lengths=[3, 4])


def test_sharded_decode_bound_holds_for_shard_by_shard_merges(rng):
    """The decode arithmetic of decode_sharded (flash_attn_vec per shard, one merge in rank
    order), in one process, against the exact attention over the visible positions."""
    h, hkv, d = 4, 2, 64
    q = rng.standard_normal((2, h, d)).astype(np.float32)
    for lens, window, with_sinks in itertools.product([[9, 0, 40, 3], [0, 17], [5]], [None, 12], [False, True]):
        ks = [rng.standard_normal((2, hkv, max(n, 1) + 3, d)).astype(np.float16) for n in lens]
        vs = [rng.standard_normal((2, hkv, max(n, 1) + 3, d)).astype(np.float16) for n in lens]
        sinks = rng.standard_normal(h).astype(np.float32) if with_sinks else None
        total, start, outs, lses = sum(lens), 0, [], []
        for n, kc, vc in zip(lens, ks, vs):
            first = max(0, total - window - start) if window else 0
            start += n
            if first >= n:
                outs.append(np.zeros((2, h, d), np.float32))
                lses.append(np.full((2, h), -np.inf, np.float32))
                continue
            kw = dict(mask="sliding_window", window=n - first) if first else {}
            o, lse = fattn.flash_attn_vec(q, kc, vc, kv_seq_len=n, return_lse=True, **kw)
            outs.append(o)
            lses.append(lse)
        merged = fattn.merge_attention(outs, lses, sinks=sinks)
        kc = np.concatenate([x[:, :, :n] for x, n in zip(ks, lens)], axis=2)
        vc = np.concatenate([x[:, :, :n] for x, n in zip(vs, lens)], axis=2)
        lo = max(0, total - window) if window else 0
        exact = reference.attention(q[:, :, None], kc[:, :, lo:], vc[:, :, lo:], sinks=sinks)[:, :, 0]
        bound = bounds.sharded_decode_bound(q, ks, vs, lens, window=window, sinks=sinks)
        ok, err, allowed = bounds.within(merged, exact, bound)
        assert ok.all(), (lens, window, with_sinks, (err / allowed).max())
        single = bounds.decode_bound(q, kc[:, :, lo:], vc[:, :, lo:], kv_seq_len=total - lo, sinks=sinks)
        assert (bound <= 1.5 * single).all()  # about the one-process decode's own bound


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(world=st.integers(1, 6), per=st.integers(1, 9), zigzag=st.booleans(), causal=st.booleans(),
       window=st.one_of(st.none(), st.integers(1, 40)), data=st.data())
def test_schedule_property(world, per, zigzag, causal, window, data):
    """Any shard lengths, order, causal flag and window: every visible pair once, every block a
    rank needs reaches it, and none travels beyond the last rank that needs it."""
    if zigzag:
        lengths = [2 * per] * world
    else:
        lengths = data.draw(st.lists(st.integers(1, 12), min_size=world, max_size=world))
    order = "zigzag" if zigzag else "contiguous"
    count, _ = coverage(lengths, order, causal, window)
    assert (count == visible_matrix(sum(lengths), causal, window)).all()
    segments = _ring.shard_segments(lengths, order)
    flag = causal or window is not None
    for rank in range(world):
        # every block a rank needs reaches it: each rank on the way from its owner sent it on
        for block in range(world):
            if _ring.needs(rank, block, segments, flag, window):
                hops = (rank - block) % world
                assert all(_ring.forwards((block + s) % world, s, segments, flag, window) for s in range(hops))
        # and no block goes further than the last rank that needs it
        for step in range(world - 1):
            block = _ring.block_at(rank, step, world)
            if _ring.forwards(rank, step, segments, flag, window):
                assert any(_ring.needs((block + s) % world, block, segments, flag, window)
                           for s in range(step + 1, world))
        # a rank computes against a block exactly when it needs it
        blocks_used = {p.block for p in _ring.parts(rank, segments, flag, window)}
        assert blocks_used == {j for j in range(world) if _ring.needs(rank, j, segments, flag, window)}
