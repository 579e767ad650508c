from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, cast, overload

import numpy as np

from . import _core
from ._common import (FLOAT32, ArrayLike, as_array, boolean, finish_out, integer, optional_scale, real, prepare_out,
                      require_dtype)

def is_quantized_cache(cache: Any) -> bool:
    """Whether ``cache`` is a quantized KV cache: an object with ``.blocks``, ``.format`` and
    ``.head_dim`` (``fattn.QuantizedCache``, or anything shaped like it)."""
    return all(hasattr(cache, name) for name in ("blocks", "format", "head_dim"))


def _cache_arg(cache: Any, name: str) -> Tuple[np.ndarray, Optional[Tuple[str, int]]]:
    """A cache argument as the core takes it: a dense array and None, or a quantized cache's uint8
    blocks and ``(format, head_dim)`` (the core checks the format, D and the blocks' shape)."""
    if not is_quantized_cache(cache):
        return as_array(cache, name), None
    fmt = cache.format
    if not isinstance(fmt, str):
        raise TypeError(f"{name}: a quantized cache's format must be a str ('q8_0', 'q4_0', ...), "
                        f"got {type(fmt).__name__}")
    return as_array(cache.blocks, name), (fmt, integer(cache.head_dim, f"{name}: head_dim"))


def _decode_args(q: Any, k_cache: Any, v_cache: Any, kv_seq_len: Any, scale: Any, mask: Any, window: Any,
                 softcap: Any, nwg: Any, sinks: Any, ring_start: Any) -> Tuple[Any, ...]:
    """The arrays and Python-typed arguments of a decode call, in the core's order (it checks the rest)."""
    (k_arr, k_quant), (v_arr, v_quant) = _cache_arg(k_cache, "k_cache"), _cache_arg(v_cache, "v_cache")
    return (as_array(q, "q"), k_arr, v_arr,
            integer(kv_seq_len, "kv_seq_len"), optional_scale(scale), mask, integer(window, "window"),
            real(softcap, "softcap"), integer(nwg, "nwg"), None if sinks is None else as_array(sinks, "sinks"),
            None if ring_start is None else integer(ring_start, "ring_start"), k_quant, v_quant)


def _paged_args(q: Any, k_cache: Any, v_cache: Any, kv_seq_len: Any, block_table: Any, scale: Any, mask: Any,
                window: Any, softcap: Any, nwg: Any, sinks: Any, ring_start: Any) -> Tuple[Any, ...]:
    """A paged decode call's arguments in the core's order: the lengths as int64 ``[B]`` (an int
    is every sequence's), the table as int32 (any integer table; entries outside int32 become
    -1, which the core refuses where it reads them)."""
    (k_arr, k_quant), (v_arr, v_quant) = _cache_arg(k_cache, "k_cache"), _cache_arg(v_cache, "v_cache")
    q_arr = as_array(q, "q")
    lens = np.asarray(kv_seq_len)
    if lens.dtype == object or lens.dtype.kind not in "iu":
        raise TypeError(f"kv_seq_len: expected an int or an integer array [B] with block_table, got "
                        f"{type(kv_seq_len).__name__} of dtype {lens.dtype}")
    if lens.ndim == 0:
        lens = np.full(q_arr.shape[0] if q_arr.ndim == 3 else 1, lens)
    lens = lens.astype(np.int64)
    table = as_array(block_table, "block_table")
    if table.dtype.kind not in "iu":
        raise TypeError(f"block_table: dtype must be int32 (or another integer type), got {table.dtype}")
    if table.dtype != np.int32:
        wide = table.astype(np.int64)
        table = np.where((wide < -2 ** 31) | (wide >= 2 ** 31), -1, wide).astype(np.int32)
    return (q_arr, k_arr, v_arr, lens, table, optional_scale(scale), mask, integer(window, "window"),
            real(softcap, "softcap"), integer(nwg, "nwg"), None if sinks is None else as_array(sinks, "sinks"),
            None if ring_start is None else integer(ring_start, "ring_start"), k_quant, v_quant)


# A KV cache argument: an array, or a quantized cache (an object with .blocks, .format and
# .head_dim, such as fattn.QuantizedCache).
CacheLike = Any


@overload
def flash_attn_vec(q: ArrayLike, k_cache: CacheLike, v_cache: CacheLike, *, kv_seq_len: Union[int, ArrayLike],
                   scale: Optional[float] = ..., mask: str = ..., window: int = ..., softcap: float = ...,
                   nwg: int = ..., out: Optional[ArrayLike] = ..., return_lse: Literal[False] = ...,
                   sinks: Optional[ArrayLike] = ..., ring_start: Optional[int] = ...,
                   block_table: Optional[ArrayLike] = ...) -> np.ndarray: ...
@overload
def flash_attn_vec(q: ArrayLike, k_cache: CacheLike, v_cache: CacheLike, *, kv_seq_len: Union[int, ArrayLike],
                   scale: Optional[float] = ..., mask: str = ..., window: int = ..., softcap: float = ...,
                   nwg: int = ..., out: Optional[ArrayLike] = ..., return_lse: Literal[True],
                   sinks: Optional[ArrayLike] = ..., ring_start: Optional[int] = ...,
                   block_table: Optional[ArrayLike] = ...) -> Tuple[np.ndarray, np.ndarray]: ...
def flash_attn_vec(q: ArrayLike, k_cache: CacheLike, v_cache: CacheLike, *, kv_seq_len: Union[int, ArrayLike],
                   scale: Optional[float] = None, mask: str = "none", window: int = 0, softcap: float = 0.0,
                   nwg: int = 32, out: Optional[ArrayLike] = None, return_lse: bool = False,
                   sinks: Optional[ArrayLike] = None, ring_start: Optional[int] = None,
                   block_table: Optional[ArrayLike] = None
                   ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Vec decode (mlx-native's ``flash_attn_vec``, seed 002): one query per head against a KV cache.

    Shapes: q ``[H, D]`` or ``[B, H, D]``, float32 (float16/bfloat16 are widened exactly first); ``k_cache``, ``v_cache`` ``[H_kv, capacity, D]``
    or ``[B, H_kv, capacity, D]`` in float32, float16 (the seed's two paths) or bfloat16, with
    ``H % H_kv == 0``; only positions ``< kv_seq_len`` are read (the rest of the capacity may hold
    anything, NaN included). D: any multiple of 32 up to 512 (the seed: 256 and 512). Output:
    float32 shaped like q.

    Quantized caches: either cache (or both, mixed freely with a dense one, e.g. a float16
    ``k_cache`` with a q4_0 ``v_cache``) may be a quantized cache, an object with ``.blocks``
    (uint8 ``[H_kv, capacity, bytes_per_row]`` or ``[B, H_kv, capacity, bytes_per_row]``, each
    row the format's blocks along D), ``.format`` (``"q8_0"``, ``"q4_0"`` or ``"tq4"``;
    ``"affine4"`` is not implemented yet) and ``.head_dim`` (D), such as ``fattn.QuantizedCache``.
    The kernel reads the blocks in place and dequantizes each chunk of 32 rows as it goes; for
    q8_0/q4_0 the result is bit for bit the decode of the dequantized float32 caches (the
    blocks' exact values; with a dense cache alongside, its values widened to float32: every
    cache's values are widened exactly before any arithmetic, so float16 and float32 caches of
    equal values agree). tq4 is read in its rotated domain (Q rotated with a tq4 K, each group's
    output rotated back with a tq4 V), within ``fattn.bounds.decode_bound`` of the exact
    attention over ``c.dequantize()`` (docs/numerics.md, "tq4 in the decode").

    mask: ``"none"``; ``"causal"`` (the query sits at position ``kv_seq_len - 1``, so nothing more
    is masked); ``"sliding_window"`` (only the last ``window`` positions, ``window = 0`` = all).
    softcap > 0 applies ``softcap * tanh(score / softcap)`` (not in the seed's kernel; llama.cpp's
    convention). nwg: groups (1 to 64) that take chunks of 32 positions round-robin.

    sinks: ``None`` or a float32 ``[H]`` array, one learned logit per query head in the units of
    the scaled scores, that joins the softmax denominator only: ``out = sum_j e^{s_j} v_j /
    (e^{sink} + sum_j e^{s_j})``. It is folded into group 0's partial once that group has seen
    its chunks (llama.cpp's place), so the partials carry it and the reduce needs no argument.
    ``-inf`` = no sink for that head (changes no bit); NaN or +inf raise ``ValueError``.

    ring_start: ``None`` or an int in ``[0, capacity)``: the cache is a ring and logical position
    ``p`` (``0 <= p < kv_seq_len``) lives in slot ``(ring_start + p) % capacity``. Masks, the
    chunks and everything else follow logical positions, so a rolled cache with the matching
    ``ring_start`` gives bit for bit the unrolled cache's output; only the valid slots are read.

    Numerics (docs/numerics.md, "Vec decode"): Q rounded to float16, f32 dot products, the masked
    score -65504, natural exp from a finite starting max, one rescale per chunk, then the reduce
    ``sum_g exp(M_g - M) O_g * (1 / sum_g exp(M_g - M) S_g)``. Equals
    ``flash_attn_vec_reduce(*flash_attn_vec_partials(...))`` bit for bit. Non-finite q, k, v:
    docs/numerics.md, "Non-finite inputs".

    Defaults: ``scale=1/sqrt(D)`` (f32), ``mask="none"``, ``window=0``, ``softcap=0`` (off),
    ``nwg=32``. Arrays: numpy arrays, CPU torch tensors (bf16 included) or anything with
    ``__dlpack__`` or the buffer protocol, read in place. ``out``: a float32 array shaped like
    q to write into (any strides that do not overlap; misaligned or non-contiguous-D arrays are
    written through a temporary); it is returned.

    return_lse: also return the float32 log-sum-exp (natural log) of each head's scores, shaped
    like q without D, so a decode result can go into :func:`merge_attention` (e.g. with a
    prefill over other keys). It is not a kernel output (the seed has none): it is computed in
    float64 from the kernel's own partials, ``M + log(sum_g exp(m_g - M) s_g)``, then rounded
    once to float32; window-masked positions count with their sentinel score, i.e. ~0 weight.
    The output is bit-identical with or without it. The LSE is over the keys only, without the
    sink (so results merge; apply the sink once, at the final :func:`merge_attention`): with
    ``sinks`` it comes from a second partials pass without them (twice the cache reads).

    block_table: a paged cache (vLLM's and flash-attention's ``block_table``). q ``[B, H, D]``;
    ``k_cache``/``v_cache`` pools of blocks ``[num_blocks, block_size, H_kv, D]`` (a quantized
    cache: its blocks ``[num_blocks, block_size, H_kv, bytes_per_row]``); ``kv_seq_len`` an
    integer array ``[B]`` (or one int for every sequence), lengths >= 0; ``block_table`` int32
    ``[B, max_blocks]`` (other integer dtypes are converted): position ``p`` of sequence ``b``
    is row ``p % block_size`` of block ``block_table[b, p // block_size]``. Only the first
    ``ceil(kv_seq_len[b] / block_size)`` entries of row ``b`` are read, each must be in ``[0,
    num_blocks)``; blocks may be shared and in any order. Each sequence's result is bit for bit
    ``flash_attn_vec`` on its blocks gathered into a contiguous cache; a sequence of length 0
    gives 0 (LSE ``-inf``). ``ring_start`` cannot be combined with it.
    """
    if boolean(return_lse, "return_lse"):
        kw: Dict[str, Any] = dict(kv_seq_len=kv_seq_len, scale=scale, mask=mask, window=window, softcap=softcap,
                                  nwg=nwg, ring_start=ring_start, block_table=block_table)
        parts = flash_attn_vec_partials(q, k_cache, v_cache, sinks=sinks, **kw)
        keys_only = parts if sinks is None else flash_attn_vec_partials(q, k_cache, v_cache, **kw)
        return flash_attn_vec_reduce(*parts, out=out), _lse_from_partials(keys_only[1], keys_only[2])
    if block_table is not None:
        q_arr, k_arr, v_arr, *paged = _paged_args(q, k_cache, v_cache, kv_seq_len, block_table, scale, mask, window,
                                                  softcap, nwg, sinks, ring_start)
        result = _core.flash_attn_vec_paged(q_arr, k_arr, v_arr, None if out is None else as_array(out, "out"),
                                            *paged)
        return result if out is None else cast(np.ndarray, out)
    q_arr, k_arr, v_arr, *params = _decode_args(q, k_cache, v_cache, kv_seq_len, scale, mask, window, softcap, nwg,
                                                sinks, ring_start)
    result = _core.flash_attn_vec(q_arr, k_arr, v_arr, None if out is None else as_array(out, "out"), *params)
    return result if out is None else cast(np.ndarray, out)


def _lse_from_partials(s: np.ndarray, m: np.ndarray) -> np.ndarray:
    """log(sum_g exp(m_g) s_g) over the group axis, in float64 (rounded once to float32);
    -inf where no group has weight."""
    m64, s64 = m.astype(np.float64), s.astype(np.float64)
    top = m64.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = (np.exp(m64 - top) * s64).sum(axis=-1)
        lse = np.where(total > 0, top[..., 0] + np.log(total), -np.inf)
    return lse.astype(np.float32)


def flash_attn_vec_partials(q: ArrayLike, k_cache: CacheLike, v_cache: CacheLike, *, kv_seq_len: Union[int, ArrayLike],
                            scale: Optional[float] = None, mask: str = "none", window: int = 0,
                            softcap: float = 0.0, nwg: int = 32, sinks: Optional[ArrayLike] = None,
                            ring_start: Optional[int] = None, block_table: Optional[ArrayLike] = None
                            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first half of :func:`flash_attn_vec`: per head and group, the unnormalised output and its
    softmax state. Returns ``(o, s, m)``: o float32 ``[..., H, nwg, D]``, s (sum of weights) and m
    (running max, natural-log units; ``-FLT_MAX/2`` for a group that saw no position) float32
    ``[..., H, nwg]``. Same arguments and defaults as :func:`flash_attn_vec` (no ``out``), quantized
    caches and ``block_table`` included (paged: o ``[B, H, nwg, D]``, a sequence of length 0 has
    every group's untouched state).
    With ``sinks``, group 0's ``(o, s, m)`` already carry each head's sink (folded after its
    chunks), so :func:`flash_attn_vec_reduce` of these partials is ``flash_attn_vec(...,
    sinks=...)`` bit for bit. Numerics: docs/numerics.md, "Vec decode" steps 1-7."""
    if block_table is not None:
        o, s, m = _core.flash_attn_vec_partials_paged(*_paged_args(q, k_cache, v_cache, kv_seq_len, block_table,
                                                                   scale, mask, window, softcap, nwg, sinks,
                                                                   ring_start))
        return o, s, m
    o, s, m = _core.flash_attn_vec_partials(*_decode_args(q, k_cache, v_cache, kv_seq_len, scale, mask, window,
                                                          softcap, nwg, sinks, ring_start))
    return o, s, m


def flash_attn_vec_reduce(o: ArrayLike, s: ArrayLike, m: ArrayLike, *, out: Optional[ArrayLike] = None
                          ) -> np.ndarray:
    """The second half of :func:`flash_attn_vec`: combines the per-group partials
    ``o [..., H, nwg, D]``, ``s`` and ``m`` ``[..., H, nwg]`` (float32; nwg 1 to 64) into the
    float32 output ``[..., H, D]``: ``M = max_g m_g``, ``w_g = exp(m_g - M)``, ``out = (sum_g w_g
    o_g) / (sum_g w_g s_g)``, 0 where the denominator is 0 (sums as balanced trees, a reciprocal
    multiply). Numerics: docs/numerics.md, "Vec decode" step 8. ``out``: a float32 array of
    that shape to write into (as for :func:`flash_attn_vec`); it is returned. Arrays may be
    any array object (numpy, CPU torch tensor, DLPack or buffer protocol), read in place."""
    result = _core.flash_attn_vec_reduce(as_array(o, "o"), as_array(s, "s"), as_array(m, "m"),
                                         None if out is None else as_array(out, "out"))
    return result if out is None else cast(np.ndarray, out)


def _merge_heads(shape: Tuple[int, ...], head_axis: Any) -> Tuple[int, int]:
    """(H, rows per head) of merge_attention's rows for outputs shaped ``shape``: the head axis
    given, or by default 1 for 4-D outputs ([B, H, L, D]) and -2 otherwise ([H, D], [B, H, D])."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"sinks: the outputs need a head axis ([..., H, D]), got shape {shape}")
    axis = (1 if ndim == 4 else ndim - 2) if head_axis is None else integer(head_axis, "head_axis")
    if not (-ndim <= axis <= ndim - 2 and axis != -1):
        raise ValueError(f"head_axis: must name an axis of the outputs other than D's (-{ndim} to {ndim - 2}), "
                         f"got {axis}")
    axis %= ndim
    return shape[axis], int(np.prod(shape[axis + 1:-1], dtype=np.int64))


def merge_attention(outputs: Sequence[ArrayLike], lses: Sequence[ArrayLike], *, sinks: Optional[ArrayLike] = None,
                    return_lse: bool = False, out: Optional[ArrayLike] = None, head_axis: Optional[int] = None
                    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Attention over the union of disjoint key sets, from the results over each set.

    ``outputs[i]`` (normalised attention outputs, ``[..., D]``, float32/float16/bfloat16) and
    ``lses[i]`` (their natural-log log-sum-exp, ``[...]``, ``-inf`` for a set with no key), e.g.
    from ``flash_attn_prefill(..., return_lse=True)`` over chunks of the keys. The same algebra as
    the vec reduce: ``M = max_i lse_i``, ``w_i = exp(lse_i - M)``, ``out = (sum_i w_i out_i) *
    (1 / sum_i w_i)``, ``lse = M + log(sum_i w_i)``; computed in float32, returned as float32 (and
    the LSE with ``return_lse=True``, default False). A row with no key anywhere gives 0 and LSE
    -inf. Numerics: docs/numerics.md, "merge_attention" and "Non-finite inputs".

    sinks: ``None`` or a float32 ``[H]`` array, one logit per query head, applied once to the
    merged result so that it is attention over the union of the keys with the sink in the
    denominator: ``out = sum_i w_i out_i / (sum_i w_i + exp(sink - M))``. ``-inf`` = no sink
    for that head; NaN or +inf raise ``ValueError``. The returned LSE stays the one over the keys
    only, so a merge can feed another merge (pass the sinks to the last one only, and parts
    computed without them). Which axis of the outputs is the head axis: ``head_axis`` (an axis
    of the outputs other than D's); by default axis 1 for 4-D outputs (``[B, H, L, D]``, as
    ``flash_attn_prefill`` returns with ``layout="bhld"``; pass ``head_axis=2`` for
    ``"blhd"``) and axis -2 otherwise (``[H, D]`` or ``[B, H, D]``, as ``flash_attn_vec``
    returns). ``head_axis`` is ignored without sinks.

    Arrays may be any array object (numpy, CPU torch tensor, DLPack or buffer protocol); float32
    C-contiguous parts are read in place, others converted to float32 once. ``out``: a float32
    array of the outputs' shape to write into (a C-contiguous one is written directly, any
    other through a temporary); it is returned.
    """
    if isinstance(outputs, np.ndarray) or isinstance(lses, np.ndarray) or not isinstance(outputs, Sequence) \
            or not isinstance(lses, Sequence):
        raise TypeError("outputs, lses: expected sequences (lists or tuples) of arrays, one per key set")
    outs_in, lses_in = list(outputs), list(lses)
    if not outs_in:
        raise ValueError("outputs: need at least one attention result")
    if len(lses_in) != len(outs_in):
        raise ValueError(f"lses: need one per output ({len(outs_in)}), got {len(lses_in)}")
    shape = as_array(outs_in[0], "outputs[0]").shape
    if len(shape) < 1:
        raise ValueError("outputs[0]: expected [..., D]")
    arrays: List[Tuple[np.ndarray, np.ndarray]] = []
    for i, (o_in, l_in) in enumerate(zip(outs_in, lses_in)):
        o, lse_i = as_array(o_in, f"outputs[{i}]"), as_array(l_in, f"lses[{i}]")
        require_dtype(o, f"outputs[{i}]")
        require_dtype(lse_i, f"lses[{i}]")
        if o.shape != shape:
            raise ValueError(f"outputs[{i}]: shape must be {shape} (outputs[0]'s), got {o.shape}")
        if lse_i.shape != shape[:-1]:
            raise ValueError(f"lses[{i}]: shape must be {shape[:-1]} (the outputs' without D), got {lse_i.shape}")
        arrays.append((o, lse_i))
    if any(n <= 0 for n in shape):
        raise ValueError(f"outputs: every extent must be > 0, got shape {shape}")
    sink_arr, heads, rows_per_head = None, 0, 1
    if sinks is not None:
        sink_arr = as_array(sinks, "sinks")
        require_dtype(sink_arr, "sinks", (FLOAT32,))
        heads, rows_per_head = _merge_heads(shape, head_axis)
        if sink_arr.ndim != 1 or sink_arr.shape[0] != heads:
            raise ValueError(f"sinks: expected a 1-D array of length H = {heads} (the outputs' head axis), "
                             f"got shape {sink_arr.shape}")
    d = shape[-1]
    flat_o = [np.require(o, np.float32, ("C", "A")).reshape(-1, d) for o, _ in arrays]
    flat_l = [np.require(lse_i, np.float32, ("C", "A")).reshape(-1) for _, lse_i in arrays]
    rows = flat_l[0].shape[0]
    if out is None:
        result = np.empty(shape, dtype=np.float32)
    else:
        result, _ = prepare_out(out, shape, FLOAT32, [(f"outputs[{i}]", o) for i, (o, _) in enumerate(arrays)]
                                + [(f"lses[{i}]", lse_i) for i, (_, lse_i) in enumerate(arrays)])
    direct = result.flags.c_contiguous and result.flags.aligned
    dest = result.reshape(rows, d) if direct else np.empty((rows, d), dtype=np.float32)
    lse = np.empty(rows, dtype=np.float32)
    _core.merge_attention(flat_o, flat_l, dest, lse, sink_arr, heads, rows_per_head)
    returned = finish_out(out, result, result if direct else dest.reshape(shape))
    return (returned, lse.reshape(shape[:-1])) if return_lse else returned
