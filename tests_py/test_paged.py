"""Paged-KV decode (issue 21): flash_attn_vec / flash_attn_vec_partials with ``block_table``. Each
sequence equals flash_attn_vec on its blocks gathered into a contiguous cache, bit for bit, on
every path, for shuffled tables, block sizes from 1 to 256, empty and length-1 sequences, GQA,
every dtype, quantized pools and the variants (windows, sinks, softcap)."""
import numpy as np
import pytest

import fattn
from helpers import BF16, F16, F32, same_bits

ALL_PATHS = fattn.available_isas(include_emulated=True)


class Pool:
    """A block pool [num_blocks, block_size, H_kv, D] (dense or quantized), a shuffled table with
    garbage past each sequence's last block, and each sequence's contiguous cache [H_kv, L, D]."""

    def __init__(self, rng, lens, block_size, h_kv, d, kind):
        self.lens = np.asarray(lens)
        need = [-(-n // block_size) for n in lens]
        num_blocks = sum(need) + 3  # a few blocks no sequence uses
        x = {name: rng.standard_normal((num_blocks, block_size, h_kv, d)).astype(F32) for name in ("k", "v")}
        order = rng.permutation(num_blocks)
        self.table = rng.integers(-9, 10 ** 6, (len(lens), max(need + [0]) + 2)).astype(np.int32)  # never read
        used = 0
        for b, n in enumerate(need):
            self.table[b, :n] = order[used:used + n]
            used += n
        if kind in ("q8_0", "q4_0", "tq4"):
            self.k, self.v = (fattn.quantize_kv(x[name], kind) for name in ("k", "v"))
        else:
            self.k, self.v = (x[name].astype(kind) for name in ("k", "v"))
        self.block_size = block_size

    def gathered(self, cache, b):
        """Sequence b's cache [H_kv, L, D] (or its quantized cache), gathered from the pool."""
        n = int(self.lens[b])
        pos = np.arange(n)
        blocks, rows = self.table[b, pos // self.block_size], pos % self.block_size
        if hasattr(cache, "blocks"):
            raw = cache.blocks[blocks, rows].transpose(1, 0, 2)  # [H_kv, L, W]
            return fattn.QuantizedCache.from_blocks(np.ascontiguousarray(raw), cache.format, head_dim=cache.head_dim)
        return np.ascontiguousarray(cache[blocks, rows].transpose(1, 0, 2))


CASES = [
    # (lens, block_size, H, H_kv, D, kind, options)
    ([70, 0, 1, 300], 16, 8, 2, 64, F16, {}),
    ([33, 129, 5], 1, 4, 4, 32, F32, {"mask": "sliding_window", "window": 20}),
    ([600, 256, 257], 256, 4, 1, 128, BF16, {"sinks": np.array([0.3, -np.inf, 1.0, -2.0], F32)}),
    ([45, 2], 7, 6, 3, 64, F16, {"softcap": 15.0, "nwg": 5}),
    ([90, 31, 64], 17, 4, 2, 128, "q8_0", {}),
    ([50, 40], 16, 4, 2, 64, "q4_0", {"mask": "causal"}),
    ([77, 1], 16, 2, 2, 256, "tq4", {"nwg": 3}),
    ([1000], 48, 8, 8, 128, F32, {}),
]


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_each_sequence_equals_its_gathered_contiguous_cache(rng, restore_isa, isa, case):
    lens, bs, h, h_kv, d, kind, opts = CASES[case]
    fattn.set_isa(isa)
    pool = Pool(rng, lens, bs, h_kv, d, kind)
    q = rng.standard_normal((len(lens), h, d)).astype(F32)
    out, lse = fattn.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=pool.lens, block_table=pool.table,
                                    return_lse=True, **opts)
    o, s, m = fattn.flash_attn_vec_partials(q, pool.k, pool.v, kv_seq_len=pool.lens, block_table=pool.table, **opts)
    assert same_bits(fattn.flash_attn_vec_reduce(o, s, m), out)
    for b, n in enumerate(lens):
        if n == 0:  # no key: 0, LSE -inf, every group untouched
            assert not out[b].any() and np.isneginf(lse[b]).all()
            assert not o[b].any() and not s[b].any() and (m[b] == np.float32(-np.finfo(F32).max / 2)).all()
            continue
        kc, vc = pool.gathered(pool.k, b), pool.gathered(pool.v, b)
        want, want_lse = fattn.flash_attn_vec(q[b], kc, vc, kv_seq_len=n, return_lse=True, **opts)
        assert same_bits(out[b], want), b
        assert same_bits(lse[b], want_lse), b
        wo, ws, wm = fattn.flash_attn_vec_partials(q[b], kc, vc, kv_seq_len=n, **opts)
        assert same_bits(o[b], wo) and same_bits(s[b], ws) and same_bits(m[b], wm), b


def test_one_length_for_every_sequence_and_int64_tables(rng):
    pool = Pool(rng, [40, 40, 40], 16, 2, 64, F16)
    q = rng.standard_normal((3, 4, 64)).astype(F32)
    a = fattn.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=40, block_table=pool.table)
    b = fattn.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=np.array([40, 40, 40], np.int32),
                             block_table=pool.table.astype(np.int64))
    assert same_bits(a, b)
    out = np.empty_like(a)
    assert fattn.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=40, block_table=pool.table, out=out) is out
    assert same_bits(out, a)


def test_an_empty_table_for_empty_sequences(rng):
    k = rng.standard_normal((3, 16, 2, 64)).astype(F16)
    q = rng.standard_normal((2, 4, 64)).astype(F32)
    out = fattn.flash_attn_vec(q, k, k, kv_seq_len=np.array([0, 0]), block_table=np.zeros((2, 0), np.int32))
    assert out.shape == q.shape and not out.any()


def test_shared_blocks(rng):
    # Two sequences that share their first block (a common prefix), read twice.
    pool = Pool(rng, [32, 32], 16, 2, 64, F32)
    pool.table[1, 0] = pool.table[0, 0]
    q = rng.standard_normal((2, 2, 64)).astype(F32)
    out = fattn.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=pool.lens, block_table=pool.table)
    for b in range(2):
        want = fattn.flash_attn_vec(q[b], pool.gathered(pool.k, b), pool.gathered(pool.v, b), kv_seq_len=32)
        assert same_bits(out[b], want)


BAD = [
    (dict(kv_seq_len=np.array([10.0, 3.0])), TypeError, "kv_seq_len: expected an int or an integer array"),
    (dict(kv_seq_len=np.array([10, -1])), ValueError, "kv_seq_len: every length must be >= 0, got -1 for sequence 1"),
    (dict(kv_seq_len=np.array([10, 3, 4])), ValueError, "kv_seq_len: expected one length per sequence (B = 2), got 3"),
    (dict(kv_seq_len=np.array([40, 3])), ValueError, "block_table: sequence 0 needs 3 blocks for kv_seq_len 40"),
    (dict(table=lambda t: t.astype(np.float32)), TypeError, "block_table: dtype must be int32"),
    (dict(table=lambda t: t[:, :, None]), ValueError, "block_table: expected [B, max_blocks]"),
    (dict(table=lambda t: t[:1]), ValueError, "block_table: expected [B, max_blocks] = [2, >= 0], got [1, 2]"),
    (dict(table=lambda t: t[:, :0]), ValueError, "block_table: sequence 0 needs 2 blocks for kv_seq_len 20"),
    (dict(entry=-1), ValueError, "block_table: entry [1, 0] = -1 is not a block (0 to num_blocks - 1 = 5)"),
    (dict(entry=6), ValueError, "block_table: entry [1, 0] = 6 is not a block"),
    (dict(entry=2 ** 40), ValueError, "block_table: entry [1, 0] = -1 is not a block"),
    (dict(ring_start=0), ValueError, "ring_start: not supported with block_table"),
    (dict(q2d=True), ValueError, "q: expected [B, H, D] with block_table"),
    (dict(cache3d=True), ValueError, "k_cache: expected [num_blocks, block_size, H_kv, D] with block_table"),
]


@pytest.mark.parametrize("bad, exc, message", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_paged_calls_name_the_argument(rng, bad, exc, message):
    k = rng.standard_normal((6, 16, 2, 64)).astype(F16)
    v = k.copy()
    table = np.array([[0, 1], [2, 3]], np.int64 if "entry" in bad else np.int32)
    if "entry" in bad:
        table[1, 0] = bad["entry"]
    if "table" in bad:
        table = bad["table"](table)
    q = rng.standard_normal((2, 4, 64)).astype(F32)
    if bad.get("q2d"):
        q = q[0]
    if bad.get("cache3d"):
        k = k[0]
    kw = dict(kv_seq_len=bad.get("kv_seq_len", np.array([20, 3])), block_table=table)
    if "ring_start" in bad:
        kw["ring_start"] = bad["ring_start"]
    with pytest.raises(exc) as info:
        fattn.flash_attn_vec(q, k, v, **kw)
    assert message in str(info.value)


@pytest.mark.parametrize("isa", ALL_PATHS)
@pytest.mark.parametrize("kind", [F16, "q4_0"])
def test_heads_side_by_side_cache_equals_the_contiguous_one(rng, restore_isa, isa, kind):
    # A [B, L, H_kv, D] cache viewed as [B, H_kv, L, D] is read position by position for all its
    # KV heads together (compute_partials): the same bits as the contiguous layout.
    fattn.set_isa(isa)
    x, y = (rng.standard_normal((2, 150, 4, 64)).astype(F32) for _ in range(2))  # [B, L, H_kv, D]
    q = rng.standard_normal((2, 8, 64)).astype(F32)
    opts = dict(kv_seq_len=137, nwg=6, sinks=rng.standard_normal(8).astype(F32), mask="sliding_window", window=90)
    if kind == "q4_0":
        kc, vc = (fattn.quantize_kv(a, "q4_0") for a in (x, y))
        side = [fattn.QuantizedCache.from_blocks(c.blocks.transpose(0, 2, 1, 3), "q4_0", head_dim=64) for c in (kc, vc)]
        flat = [fattn.QuantizedCache.from_blocks(np.ascontiguousarray(c.blocks.transpose(0, 2, 1, 3)), "q4_0",
                                                 head_dim=64) for c in (kc, vc)]
    else:
        side = [a.astype(kind).transpose(0, 2, 1, 3) for a in (x, y)]
        flat = [np.ascontiguousarray(a) for a in side]
    assert same_bits(fattn.flash_attn_vec(q, *side, **opts), fattn.flash_attn_vec(q, *flat, **opts))


def test_the_numpy_twin_follows_the_paged_call(rng):
    # fattn.reference.flash_attn_vec with block_table: each sequence's gathered cache through the
    # NumPy model (dot products rounded once there: a few float32 ulps from the kernel).
    from fattn import reference
    pool = Pool(rng, [70, 0, 33], 16, 2, 64, "q8_0")
    q = rng.standard_normal((3, 4, 64)).astype(F32)
    ours = fattn.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=pool.lens, block_table=pool.table)
    ref = reference.flash_attn_vec(q, pool.k, pool.v, kv_seq_len=pool.lens, block_table=pool.table)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert not ref[1].any()
