"""Not a test: code written as a user would, for `make typecheck` (mypy --strict) to check
against fattn's public signatures. Running it also works (it is cheap)."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

import fattn
from fattn import reference


def prefill_and_merge(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    q = rng.standard_normal((1, 4, 16, 64)).astype(np.float32)
    k = rng.standard_normal((1, 2, 32, 64)).astype(np.float32)
    v = rng.standard_normal((1, 2, 32, 64)).astype(np.float32)
    mask = np.tril(np.ones((16, 32), dtype=bool), k=16)
    blk: np.ndarray = fattn.flash_attn_prefill_blk(mask, head_dim=64)
    bq, bk = fattn.prefill_geometry(64)
    assert blk.shape == (-(-16 // bq), -(-32 // bk))
    parts = [fattn.flash_attn_prefill(q, k[:, :, i:i + 16], v[:, :, i:i + 16], return_lse=True) for i in (0, 16)]
    outputs: List[np.ndarray] = []
    lses: List[np.ndarray] = []
    for part in parts:
        assert isinstance(part, tuple)
        outputs.append(part[0])
        lses.append(part[1])
    merged = fattn.merge_attention(outputs, lses, return_lse=True)
    assert isinstance(merged, tuple)
    out = np.empty_like(q)
    full = fattn.flash_attn_prefill(q, k, v, mask, blk=blk, out=out)
    assert isinstance(full, np.ndarray)
    return merged[0], merged[1]


def decode(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal((8, 128)).astype(np.float32)
    cache = rng.standard_normal((2, 100, 128)).astype(np.float16)
    o, s, m = fattn.flash_attn_vec_partials(q, cache, cache, kv_seq_len=60, nwg=4)
    out: np.ndarray = fattn.flash_attn_vec_reduce(o, s, m)
    again = fattn.flash_attn_vec(q, cache, cache, kv_seq_len=60, nwg=4, mask="sliding_window", window=30,
                                 softcap=30.0, out=np.empty_like(q))
    exact = reference.flash_attn_vec(q, cache, cache, kv_seq_len=60, nwg=4)
    assert again.shape == out.shape
    # a quantized cache: any object with .blocks, .format, .head_dim (fattn.QuantizedCache)
    quantized = fattn.quantize_kv(cache, "q4_0")
    mixed: np.ndarray = fattn.flash_attn_vec(q, cache, quantized, kv_seq_len=60)
    values: np.ndarray = reference.dequantize_kv(quantized.blocks, "q4_0", 128)
    assert mixed.shape == q.shape and values.shape == cache.shape
    assert reference.flash_attn_vec(q, cache, quantized, kv_seq_len=60).shape == q.shape
    tq = fattn.quantize_kv(cache, "tq4")
    rotated: np.ndarray = fattn.flash_attn_vec(q, tq, tq, kv_seq_len=60)
    assert fattn.bounds.within(rotated, rotated, fattn.bounds.decode_bound(q, tq, tq, kv_seq_len=60))[0].all()
    pool = rng.standard_normal((10, 16, 2, 128)).astype(np.float16)  # a paged pool
    table = np.arange(10, dtype=np.int32).reshape(2, 5)
    paged: np.ndarray = fattn.flash_attn_vec(np.stack([q, q]), pool, pool, kv_seq_len=np.array([60, 0]),
                                             block_table=table)
    po, ps, pm = fattn.flash_attn_vec_partials(np.stack([q, q]), pool, pool, kv_seq_len=60, block_table=table)
    assert paged.shape == (2,) + q.shape and po.shape[:2] == ps.shape[:2] == pm.shape[:2]
    with_lse, lse = fattn.flash_attn_vec(q, cache, cache, kv_seq_len=60, return_lse=True)
    ok, _, _ = fattn.bounds.within(with_lse, exact, fattn.bounds.decode_bound(q, cache, cache, kv_seq_len=60))
    assert ok.shape == with_lse.shape
    assert lse.shape == q.shape[:-1] and with_lse.shape == q.shape
    merged, merged_lse = fattn.merge_attention([with_lse, with_lse], [lse, lse], return_lse=True)
    exact_merge, exact_lse = reference.merge_attention([with_lse, with_lse], [lse, lse], return_lse=True)
    out_bound, lse_bound = fattn.bounds.merge_bound([with_lse, with_lse], [lse, lse])
    assert fattn.bounds.within(merged, exact_merge, out_bound)[0].all()
    assert (abs(merged_lse - exact_lse) <= lse_bound).all()
    sinks = np.zeros(8, np.float32)
    sunk = fattn.flash_attn_vec(q, cache, cache, kv_seq_len=60, sinks=sinks, ring_start=3)
    sunk_model = reference.flash_attn_vec(q, cache, cache, kv_seq_len=60, sinks=sinks, ring_start=3)
    parts = fattn.flash_attn_vec_partials(q, cache, cache, kv_seq_len=60, sinks=sinks, ring_start=3)
    assert (fattn.flash_attn_vec_reduce(*parts) == sunk).all() and sunk_model.shape == sunk.shape
    sunk_merge = fattn.merge_attention([with_lse, with_lse], [lse, lse], sinks=sinks, head_axis=0)
    sink_bound, _ = fattn.bounds.merge_bound([with_lse, with_lse], [lse, lse], sinks=sinks)
    exact_sunk = reference.merge_attention([with_lse, with_lse], [lse, lse], sinks=sinks, head_axis=0)
    assert fattn.bounds.within(sunk_merge, exact_sunk, sink_bound)[0].all()
    diff: np.ndarray = out - exact
    return diff


def naive(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal((2, 4, 8, 32)).astype(np.float16)
    y: np.ndarray = fattn.sdpa(q, q, q, causal=False, scale=0.125, kv_seq_len=8)
    return fattn.round_to(y, np.float32)


def varlen(rng: np.random.Generator) -> np.ndarray:
    cu_q = np.array([0, 5, 5, 12], dtype=np.int32)
    cu_k = np.array([0, 8, 10, 12], dtype=np.int64)
    q = rng.standard_normal((12, 4, 64)).astype(np.float32)
    kv = rng.standard_normal((12, 2, 64)).astype(np.float32)
    packed = fattn.flash_attn_varlen(q, kv, kv, cu_q, cu_k, causal=True, window=4, softcap=30.0,
                                     sinks=np.zeros(4, np.float32), return_lse=True)
    assert isinstance(packed, tuple)
    out = np.empty_like(q)
    again = fattn.flash_attn_varlen(q, kv, kv, cu_q, cu_k, causal="top_left", scale=0.125, kernel="candle", out=out)
    assert again is out
    lse: np.ndarray = packed[1]
    return lse


def quantized(rng: np.random.Generator) -> np.ndarray:
    k = rng.standard_normal((2, 16, 64)).astype(np.float32)
    cache: fattn.QuantizedCache = fattn.quantize_kv(k, "q8_0")
    fmt: str = cache.format
    dim: int = cache.head_dim
    shape: Tuple[int, ...] = cache.shape
    blocks: np.ndarray = cache.blocks
    blocks[..., 3, :] = fattn.quantize_kv(k[:, 3:4], fmt).blocks[..., 0, :]
    again = fattn.QuantizedCache.from_blocks(blocks, fmt, head_dim=dim)
    mine: np.ndarray = reference.quantize_kv(k, "q4_0")
    assert (reference.dequantize_kv(mine, "q4_0", dim) == fattn.quantize_kv(k, "q4_0").dequantize()).all()
    assert shape == again.shape and cache.bytes_per_row == reference.quant_row_bytes(fmt, dim)
    values: np.ndarray = again.dequantize()
    return values


def _rejected_by_the_type_checker(q: np.ndarray) -> None:
    """Never called. mypy --strict (warn_unused_ignores) fails if an ignore below is unused,
    i.e. if the public signatures stopped rejecting these calls."""
    fattn.sdpa([[1.0]], q, q)  # type: ignore[arg-type]
    fattn.flash_attn_vec(q, q, q, kv_seq_len="5")  # type: ignore[call-overload]
    fattn.merge_attention([q], [1.0])  # type: ignore[list-item]
    fattn.flash_attn_varlen(q, q, q, q, q, window="4")  # type: ignore[arg-type]
    fattn.quantize_kv(q, 8)  # type: ignore[arg-type]
    fattn.QuantizedCache.from_blocks(q, "q8_0", head_dim="32")  # type: ignore[arg-type]


def with_buffers() -> np.ndarray:
    """Buffer-protocol objects are accepted as they are."""
    import array
    data = array.array("f", [0.5] * 64)
    out: np.ndarray = fattn.round_to(memoryview(data), np.float16)
    total: np.ndarray = fattn.round_to(data, np.float32) + out
    return total


def main() -> None:
    threads: int = fattn.get_num_threads()
    fattn.set_num_threads(max(1, threads))
    isas: List[str] = fattn.available_isas()
    with_emulated: List[str] = fattn.available_isas(include_emulated=True)
    assert with_emulated[:len(isas)] == isas
    best = str(fattn.build_info()["isa"])
    fattn.set_isa(isas[0])
    fattn.set_isa(best)
    version: str = fattn.__version__
    rng = np.random.default_rng(0)
    prefill_and_merge(rng)
    decode(rng)
    naive(rng)
    varlen(rng)
    quantized(rng)
    with_buffers()
    print(version, "ok")


if __name__ == "__main__":
    main()
