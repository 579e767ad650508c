"""Attention across processes on ``torch.distributed``: sequence-parallel ("ring") prefill and
sharded-KV decode, exact up to the merge's rounding (docs/numerics.md §10).

    from fattn.integrations import distributed as fd
    out = fd.ring_attention(q, k, v, causal=True)          # this rank's shard of the output
    o = fd.decode_sharded(q, k_shard, v_shard, kv_seq_len=n)  # the full decode output, every rank

Every rank of the process group (``group``, default the world) calls the function with its own
shard; the ranks exchange what the algorithm needs with ``torch.distributed`` (gloo on CPU; the
same code runs on any backend with point-to-point and ``all_gather`` for CPU tensors) and fattn's
kernels do the arithmetic: ``flash_attn_prefill(..., return_lse=True)`` /
``flash_attn_vec(..., return_lse=True)`` on each (query, key block) pair and ``merge_attention``
to combine them. Nothing here is a kernel of its own.

Before any block moves, the ranks check collectively that their shards and arguments agree (one
``all_gather`` of a small fixed-size header; the messages follow only when something is wrong): an argument the kernels reject on one rank, or a shard that does not match
the others', raises the same ``ValueError``/``TypeError`` on every rank, naming the rank. A rank
that dies or stops calling makes the others' communication fail with ``RuntimeError`` once the
process group's timeout passes (``init_process_group(timeout=...)``; the default is long).

:func:`last_stats` describes this process's last call: bytes sent and received, messages, the time
computing and the time blocked on communication.
"""
from __future__ import annotations

import importlib
import math
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _decode, _prefill, _ring
from .._common import as_array

try:
    torch: Any = importlib.import_module("torch")
    dist: Any = importlib.import_module("torch.distributed")
except ImportError as e:
    raise ModuleNotFoundError(f"fattn.integrations.distributed needs PyTorch (pip install torch): {e}",
                              name="torch") from e

__all__ = ["ring_attention", "decode_sharded", "shard", "unshard", "last_stats", "CommStats", "ORDERS", "launch_local"]

ORDERS = _ring.ORDERS


@dataclass
class CommStats:
    """What one call did on this rank. ``bytes_sent``/``bytes_received``: payload bytes of the
    tensors this rank handed to ``torch.distributed`` (K/V blocks; decode partial results),
    not counting the argument check's header (``check_bytes``: 8 bytes per checked field);
    ``seconds_compute``: fattn's kernels and merges; ``seconds_waiting``: blocked on
    communication (the argument check included) — with ``overlap=True`` only the part not
    hidden behind compute."""
    op: str
    rank: int
    world_size: int
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    check_bytes: int = 0
    parts: int = 0
    seconds_compute: float = 0.0
    seconds_waiting: float = 0.0
    seconds_total: float = 0.0


_last: Optional[CommStats] = None


def last_stats() -> Optional[CommStats]:
    """This process's :class:`CommStats` for its last :func:`ring_attention` or
    :func:`decode_sharded` call (None before any)."""
    return _last


# --- helpers ---------------------------------------------------------------------------


def _tensor(x: Any, name: str) -> Any:
    """A CPU tensor the kernels may read: one that requires grad is read through a detached view
    (the same memory; these calls record no graph and have no backward)."""
    if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
        raise TypeError(f"{name}: expected a CPU torch.Tensor, got {type(x).__name__}"
                        + (f" on {x.device}" if isinstance(x, torch.Tensor) else ""))
    return x.detach()


def _causal_flag(causal: Any) -> bool:
    # For a whole sequence attending to itself top-left and bottom-right alignment coincide.
    if isinstance(causal, str):
        if causal in ("top_left", "bottom_right"):
            return True
        raise ValueError(f'causal: expected a bool, "top_left" or "bottom_right", got {causal!r}')
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected a bool or a string, got {type(causal).__name__}")
    return bool(causal)


class _Group:
    """The process group as this call sees it, with every collective wrapped so that a failure
    names the operation, the rank and what was being done."""

    def __init__(self, op: str, group: Any) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(f"{op}: torch.distributed has no process group: call "
                               "torch.distributed.init_process_group first")
        self.op, self.group = op, group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.stats = CommStats(op, self.rank, self.world)

    def global_rank(self, r: int) -> int:
        return r if self.group is None else int(dist.get_global_rank(self.group, r))

    def failed(self, what: str, e: BaseException) -> RuntimeError:
        return RuntimeError(f"{self.op}: rank {self.rank}: {what} failed (a rank failed or stopped calling, or the "
                            f"process group's timeout passed): {e}")

    def wait(self, requests: Sequence[Any], what: str) -> None:
        t = time.perf_counter()
        try:
            for r in requests:
                r.wait()
        except RuntimeError as e:
            raise self.failed(what, e) from e
        self.stats.seconds_waiting += time.perf_counter() - t

    def check(self, local: Tuple[Optional[BaseException], Dict[str, Any]], rules: Sequence[str],
              count: str) -> List[int]:
        """Share every rank's local outcome and description; raise the same error on every rank
        if any rank failed, or if any field in ``rules`` differs from rank 0's; return every
        rank's ``meta[count]`` (its length). One ``all_gather`` of a fixed-size int64 header
        (a status, a CRC-32 of each rule field's repr, the count) does it when all agree; only
        then, on a failure or a difference, a second exchange (``all_gather_object``) brings the
        messages and values the error names."""
        error, meta = local
        header = torch.zeros(len(rules) + 2, dtype=torch.int64)
        if error is None:
            header[1:-1] = torch.tensor([zlib.crc32(repr(meta[key]).encode()) for key in rules])
            header[-1] = int(meta[count])
        else:
            header[0] = 1
        headers = [torch.empty_like(header) for _ in range(self.world)]
        t = time.perf_counter()
        try:
            dist.all_gather(headers, header, group=self.group)
            agreed = all(int(h[0]) == 0 and torch.equal(h[1:-1], headers[0][1:-1]) for h in headers)
            gathered: List[Any] = [None] * self.world
            if not agreed:  # the failure path: bring the messages and the values
                mine = (None if error is None else (type(error).__name__, str(error)), meta)
                dist.all_gather_object(gathered, mine, group=self.group)
        except RuntimeError as e:
            raise self.failed("the argument check", e) from e
        self.stats.seconds_waiting += time.perf_counter() - t
        self.stats.check_bytes = header.numel() * 8
        if agreed:
            return [int(h[-1]) for h in headers]
        for r, (err, _) in enumerate(gathered):
            if err is not None:
                kind = TypeError if err[0] == "TypeError" else ValueError
                raise kind(f"{self.op}: rank {r}: {err[1]}")
        metas = [m for _, m in gathered]
        for r, m in enumerate(metas):
            for key in rules:
                if m[key] != metas[0][key]:
                    raise ValueError(f"{self.op}: the ranks' shards or arguments do not match: rank {r} has "
                                     f"{key} = {m[key]}, rank 0 has {metas[0][key]}")
        raise RuntimeError(f"{self.op}: the argument check disagreed, but no field differs (a CRC-32 collision?)")


def _to_torch_dtype(a: np.ndarray, dtype: Any) -> Any:
    """A float32 NumPy result as a new torch tensor of ``dtype`` (correctly rounded)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


# --- ring attention --------------------------------------------------------------------


def ring_attention(q: Any, k: Any, v: Any, *, causal: Union[bool, str] = False, scale: Optional[float] = None,
                   group: Any = None, kernel: str = "auto", softcap: float = 0.0, window: Optional[int] = None,
                   sinks: Any = None, return_lse: bool = False, order: str = "contiguous",
                   overlap: bool = True) -> Any:
    """Sequence-parallel attention: this rank's output shard of attention over the whole sequence.

    q ``[B, H, L_r, D]``, k and v ``[B, H_kv, L_r, D]``: CPU torch tensors (bfloat16, float16 or
    float32, one dtype), this rank's shard of the queries and of the keys/values at the same
    positions. ``order="contiguous"`` (default): rank r holds positions ``sum(L[:r]) ..
    sum(L[:r+1]) - 1`` (the shards may differ in length, each >= 1). ``order="zigzag"``: the
    sequence is cut into ``2W`` equal chunks and rank r holds chunks r and ``2W-1-r``
    concatenated (every L_r equal and even; :func:`shard` builds such shards), which gives every
    rank the same causal work. B, H, H_kv, D, the dtype and every other argument must be the same
    on every rank (checked collectively).

    K/V blocks travel once round the ring (K and V in one message): at step s rank r holds rank
    ``r - s``'s block, computes its queries against it with ``flash_attn_prefill(...,
    q_offset=..., return_lse=True)`` while the block moves on to rank r + 1 (``overlap=True``:
    ``isend``/``irecv`` posted before the kernel runs; ``False`` waits for them first), and merges
    the part into a float32 running result with ``merge_attention``. With ``causal`` or a
    ``window``, keys no query of the shard sees are skipped (and, where the mask allows, a block's
    keys go to the kernel in one call: docs/numerics.md §10), and a block stops travelling once
    no rank further round the ring needs it: causal ``contiguous`` sends ``W(W-1)/2`` blocks in
    all instead of ``W(W-1)`` (rank r sends r + 1 blocks, the last rank none), and rank r computes
    r + 1 of the W² pairs, so the last rank does about twice the average work — ``"zigzag"``
    evens that out.

    causal: ``True`` (``"top_left"`` and ``"bottom_right"`` mean the same here: the queries and keys
    are the same positions). window, softcap, scale, kernel: as ``fattn.flash_attn_prefill``, in
    global positions (a window implies causal). sinks: float32 ``[H]``, applied once, in the last
    merge (``merge_attention(..., sinks=)``). return_lse: also return the float32 LSE ``[B, H, L_r]``
    over the keys (without the sink).

    Returns a new tensor of q's dtype and shape, without autograd history (no backward; inputs that
    require grad are read through detached views), each row the float32 merge rounded once to the
    I/O type. Error against the exact attention: ``fattn.bounds.ring_bound`` (docs/numerics.md
    §10). :func:`last_stats` has the bytes sent and the time spent.
    """
    global _last
    g = _Group("ring_attention", group)
    t_start = time.perf_counter()
    error: Optional[BaseException] = None
    meta: Dict[str, Any] = {}
    try:
        q, k, v = _tensor(q, "q"), _tensor(k, "k"), _tensor(v, "v")
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise ValueError(f"q, k, v: expected [B, H, L_r, D] and [B, H_kv, L_r, D], got shapes {tuple(q.shape)}, "
                             f"{tuple(k.shape)}, {tuple(v.shape)}")
        if k.shape[2] != q.shape[2] or v.shape[2] != q.shape[2]:
            raise ValueError(f"k, v: must hold the same positions as q (L_r = {q.shape[2]}), got shapes "
                             f"{tuple(k.shape)}, {tuple(v.shape)}")
        causal_on = _causal_flag(causal) or window is not None
        if order not in ORDERS:
            raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
        # The kernels' own checks of everything but the length, on one row and one key (cheap).
        _prefill.flash_attn_prefill(q[:, :, :1], k[:, :, :1], v[:, :, :1], causal=causal_on, scale=scale,
                                    kernel=kernel, softcap=softcap, window=window)
        if sinks is not None:
            sinks_np = np.asarray(_tensor(sinks, "sinks")) if isinstance(sinks, torch.Tensor) else sinks
            _decode.merge_attention([np.zeros((1, q.shape[1], 1, 1), np.float32)],
                                    [np.zeros((1, q.shape[1], 1), np.float32)], sinks=sinks_np)
        meta = dict(batch=q.shape[0], heads=q.shape[1], kv_heads=k.shape[1], head_dim=q.shape[3], dtype=str(q.dtype),
                    length=q.shape[2], causal=causal_on, scale=scale, kernel=kernel, softcap=float(softcap),
                    window=window, order=order, return_lse=bool(return_lse),
                    sinks=None if sinks is None else [float(x) for x in np.asarray(sinks, np.float64).ravel()])
    except (TypeError, ValueError) as e:
        error = e
    lengths = g.check((error, meta), ["batch", "heads", "kv_heads", "head_dim", "dtype", "causal", "scale", "kernel",
                                      "softcap", "window", "order", "sinks", "return_lse"], "length")
    try:
        segments = _ring.shard_segments(lengths, order)
    except ValueError as e:
        raise ValueError(f"ring_attention: {e}") from None

    rank, world = g.rank, g.world
    stats = g.stats
    state = _ring.RankResult(q, rank, segments, causal=causal_on, window=window, scale=scale, softcap=softcap,
                             kernel=kernel)
    b, d = q.shape[0], q.shape[3]
    current = torch.stack((k, v))  # K and V travel together: [2, B, H_kv, L, D], one message per step
    for step in range(world):
        block = _ring.block_at(rank, step, world)
        requests, incoming = [], None
        if step < world - 1:
            if _ring.forwards(rank, step, segments, causal_on, window):
                requests.append(dist.isend(current, g.global_rank((rank + 1) % world), group=group))
                stats.bytes_sent += current.numel() * current.element_size()
                stats.messages_sent += 1
            if _ring.forwards((rank - 1) % world, step, segments, causal_on, window):
                source = (block - 1) % world
                incoming = torch.empty((2, b, k.shape[1], lengths[source], d), dtype=k.dtype)
                requests.append(dist.irecv(incoming, g.global_rank((rank - 1) % world), group=group))
                stats.bytes_received += incoming.numel() * incoming.element_size()
        if not overlap:
            g.wait(requests, f"ring step {step} (block exchange)")
            requests = []
        t = time.perf_counter()
        state.absorb(step, current[0], current[1])
        stats.seconds_compute += time.perf_counter() - t
        g.wait(requests, f"ring step {step} (block exchange)")
        if incoming is not None:
            current = incoming

    t = time.perf_counter()
    out32, lse32 = state.finish(None if sinks is None else sinks_np)
    out = _to_torch_dtype(out32, q.dtype)
    stats.parts = state.computed
    stats.seconds_compute += time.perf_counter() - t
    stats.seconds_total = time.perf_counter() - t_start
    _last = stats
    return (out, torch.from_numpy(lse32)) if return_lse else out


# --- sharded-KV decode -----------------------------------------------------------------


def _capacity(cache: Any) -> int:
    blocks = cache.blocks if _decode.is_quantized_cache(cache) else cache
    return int(blocks.shape[-2])


def decode_sharded(q: Any, k_shard: Any, v_shard: Any, *, kv_seq_len: int, group: Any = None,
                   scale: Optional[float] = None, mask: str = "none", window: int = 0, softcap: float = 0.0,
                   sinks: Any = None, nwg: int = 32, return_lse: bool = False) -> Any:
    """Decode against a KV cache sharded by position across the ranks; every rank returns the
    full output.

    q ``[H, D]`` or ``[B, H, D]`` (the same query on every rank: its bytes' CRC-32 is checked); ``k_shard``/``v_shard`` this
    rank's part of the cache, ``[H_kv, capacity_r, D]`` or ``[B, H_kv, capacity_r, D]`` CPU torch
    tensors or NumPy arrays (float32, float16, bfloat16) or ``fattn.QuantizedCache`` objects, as
    ``fattn.flash_attn_vec`` takes them; ``kv_seq_len`` the valid positions of this shard (0
    allowed: the shard adds nothing). The shards hold the sequence in rank order: rank r's first
    position follows the last valid position of rank r - 1.

    Each rank runs ``flash_attn_vec(..., return_lse=True)`` on its shard, the ranks exchange their
    ``(output, LSE)`` with one ``all_gather`` (``W·B·H·(D + 1)`` float32 per rank), and every rank
    merges them in rank order with ``merge_attention`` (sinks applied there, once), so every rank
    returns the same bits. ``mask="sliding_window"`` with ``window=W`` keeps the last W positions of
    the whole sequence (each shard reads only its share of them); ``"none"``/``"causal"`` keep all.
    scale, softcap, nwg: as ``flash_attn_vec``. return_lse: also return the float32 LSE over the
    keys (without the sink).

    Returns a float32 torch tensor shaped like q. Error against the exact attention:
    ``fattn.bounds.sharded_decode_bound`` (docs/numerics.md §10).
    """
    global _last
    g = _Group("decode_sharded", group)
    t_start = time.perf_counter()
    error: Optional[BaseException] = None
    meta: Dict[str, Any] = {}
    local: Optional[Tuple[np.ndarray, np.ndarray]] = None
    try:
        q, k_shard, v_shard = (_tensor(x, name) if isinstance(x, torch.Tensor) else x
                               for x, name in ((q, "q"), (k_shard, "k_shard"), (v_shard, "v_shard")))
        if isinstance(kv_seq_len, (bool, np.bool_)) or not isinstance(kv_seq_len, (int, np.integer)):
            raise TypeError(f"kv_seq_len: expected an int, got {type(kv_seq_len).__name__}")
        n = int(kv_seq_len)
        if n < 0:
            raise ValueError(f"kv_seq_len: must be >= 0 (the valid positions of this shard), got {n}")
        if mask not in ("none", "causal", "sliding_window"):
            raise ValueError(f'mask: expected "none", "causal" or "sliding_window", got {mask!r}')
        if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) or window < 0:
            raise ValueError(f"window: expected an int >= 0 (0 = all positions), got {window!r}")
        capacity = _capacity(k_shard)
        windowed = mask == "sliding_window" and window > 0
        t = time.perf_counter()
        if n > 0 and not windowed:  # the shard's whole share, which the other ranks do not change
            local = _decode.flash_attn_vec(q, k_shard, v_shard, kv_seq_len=n, scale=scale, softcap=softcap, nwg=nwg,
                                           return_lse=True)
        elif n > 0 or capacity > 0:  # only the kernel's own checks, at the cost of one chunk (one visible position)
            _decode.flash_attn_vec(q, k_shard, v_shard, kv_seq_len=max(n, 1), scale=scale, softcap=softcap, nwg=nwg,
                                   mask="sliding_window", window=1)
        g.stats.seconds_compute += time.perf_counter() - t
        if sinks is not None:
            sinks_np = np.asarray(sinks)
            _decode.merge_attention([np.zeros((int(q.shape[-2]), 1), np.float32)],
                                    [np.zeros(int(q.shape[-2]), np.float32)], sinks=sinks_np)
        # The same query on every rank, or the merged output would silently mix different queries.
        q_crc32 = zlib.crc32(np.ascontiguousarray(as_array(q, "q")).tobytes())
        meta = dict(q_shape=tuple(int(x) for x in q.shape), q_crc32=q_crc32, kv_seq_len=n, scale=scale, mask=mask,
                    window=int(window),
                    softcap=float(softcap), return_lse=bool(return_lse),
                    sinks=None if sinks is None else [float(x) for x in np.asarray(sinks, np.float64).ravel()])
    except (TypeError, ValueError) as e:
        error = e
    lengths = g.check((error, meta), ["q_shape", "q_crc32", "scale", "mask", "window", "softcap", "sinks",
                                      "return_lse"], "kv_seq_len")
    stats = g.stats
    start, total = sum(lengths[:g.rank]), sum(lengths)
    # The window's share of this shard: global positions >= total - window, i.e. local >= first.
    first = max(0, total - window - start) if mask == "sliding_window" and window > 0 else 0
    shape = tuple(int(x) for x in q.shape)
    rows = int(np.prod(shape[:-1]))
    d = shape[-1]
    t = time.perf_counter()
    packed = torch.empty((rows, d + 1), dtype=torch.float32)  # output and LSE, one message
    if first < n:
        if local is None:  # the window's share of this shard, now that the lengths are known
            kw: Dict[str, Any] = dict(kv_seq_len=n, scale=scale, softcap=softcap, nwg=nwg)
            if first > 0:
                kw.update(mask="sliding_window", window=n - first)
            local = _decode.flash_attn_vec(q, k_shard, v_shard, return_lse=True, **kw)
        o, lse = local
        packed[:, :d] = torch.from_numpy(np.ascontiguousarray(o).reshape(rows, d))
        packed[:, d] = torch.from_numpy(np.ascontiguousarray(lse).reshape(rows))
        stats.parts = 1
    else:  # nothing of the sequence's visible part lives here: no key, weight exactly 0
        packed[:, :d] = 0.0
        packed[:, d] = -math.inf
    stats.seconds_compute += time.perf_counter() - t
    gathered = [torch.empty_like(packed) for _ in range(g.world)]
    t = time.perf_counter()
    try:
        dist.all_gather(gathered, packed, group=group)
    except RuntimeError as e:
        raise g.failed("the exchange of the shards' results (all_gather)", e) from e
    stats.seconds_waiting += time.perf_counter() - t
    stats.bytes_sent = packed.numel() * 4
    stats.bytes_received = (g.world - 1) * packed.numel() * 4
    stats.messages_sent = 1
    t = time.perf_counter()
    outs = [x[:, :d].numpy().reshape(shape) for x in gathered]
    lses = [x[:, d].numpy().reshape(shape[:-1]) for x in gathered]
    merged, merged_lse = _decode.merge_attention(outs, lses, sinks=None if sinks is None else sinks_np,
                                                 return_lse=True)
    stats.seconds_compute += time.perf_counter() - t
    stats.seconds_total = time.perf_counter() - t_start
    _last = stats
    result = torch.from_numpy(merged)
    return (result, torch.from_numpy(merged_lse)) if return_lse else result


# --- shards ----------------------------------------------------------------------------


def _positions(length: int, rank: int, world: int, order: str) -> List[Tuple[int, int]]:
    if length % world:
        raise ValueError(f"length {length} is not divisible by world_size {world}")
    per = length // world
    segs = _ring.shard_segments([per] * world, order)[rank]
    return [(s.start, s.start + s.length) for s in segs]


def shard(x: Any, rank: int, world_size: int, *, order: str = "contiguous", dim: int = 2) -> Any:
    """Rank ``rank``'s shard of a whole-sequence tensor (or NumPy array) ``x`` along ``dim``
    (default 2, the L of ``[B, H, L, D]``), as :func:`ring_attention` expects it for ``order``:
    equal shards, ``x.shape[dim]`` divisible by ``world_size`` (by ``2·world_size`` for zigzag)."""
    pieces = [x.narrow(dim, a, b - a) if isinstance(x, torch.Tensor) else np.take(x, range(a, b), axis=dim)
              for a, b in _positions(x.shape[dim], rank, world_size, order)]
    if len(pieces) == 1:
        return pieces[0]
    return torch.cat(pieces, dim) if isinstance(x, torch.Tensor) else np.concatenate(pieces, axis=dim)


def unshard(shards: Sequence[Any], *, order: str = "contiguous", dim: int = 2) -> Any:
    """The whole-sequence tensor from every rank's shard (in rank order), undoing :func:`shard`."""
    world = len(shards)
    per = shards[0].shape[dim]
    is_torch = isinstance(shards[0], torch.Tensor)
    pieces: List[Tuple[int, Any]] = []
    for r, s in enumerate(shards):
        offset = 0
        for a, b in _positions(per * world, r, world, order):
            piece = s.narrow(dim, offset, b - a) if is_torch else np.take(s, range(offset, offset + b - a), axis=dim)
            pieces.append((a, piece))
            offset += b - a
    ordered = [p for _, p in sorted(pieces, key=lambda t: t[0])]
    return torch.cat(ordered, dim) if is_torch else np.concatenate(ordered, axis=dim)


# --- local ranks -------------------------------------------------------------------------


def _local_main(fn: Any, rank: int, world: int, store: str, timeout: float, threads: Optional[int], args: Tuple[Any, ...],
                results: Any) -> None:
    import datetime
    import os
    import pickle
    import traceback

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's sockets on the loopback interface only
    try:
        if threads is not None:
            from fattn import set_num_threads
            set_num_threads(threads)
            torch.set_num_threads(threads)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        try:
            value = fn(rank, world, *args)
        finally:
            dist.destroy_process_group()
        # Plain pickle bytes: torch registers shared-memory reductions for tensors on the queue's
        # pickler, whose file descriptors would not outlive this process.
        results.put((rank, True, pickle.dumps(value)))
    except BaseException as e:  # reported to the parent, which raises
        results.put((rank, False, pickle.dumps((type(e).__name__, str(e), traceback.format_exc()))))


def launch_local(fn: Any, world_size: int, args: Tuple[Any, ...] = (), *, timeout: float = 120.0,
                 threads: Optional[int] = None, group_timeout: Optional[float] = None) -> List[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` local processes, each in a gloo process
    group on this machine's loopback interface (rendezvous through a file, no port), and return
    their return values in rank order.

    For examples, tests and benchmarks on one machine; across machines use ``torchrun`` or your
    launcher and call :func:`ring_attention` / :func:`decode_sharded` in each process (README,
    "Across processes"). ``fn`` must be importable by name (a module-level function: the ranks are
    started with the ``spawn`` method) and its arguments and return value picklable. ``timeout``
    (seconds) bounds the whole run: past it the ranks are killed and ``TimeoutError`` raised;
    ``group_timeout`` (seconds, default ``timeout``) is the process group's own timeout, after
    which a rank waiting for one that stopped gets a ``RuntimeError``. ``threads``: each rank's fattn and torch thread count. A
    rank that raises makes this raise ``RuntimeError`` with that rank's traceback (the others'
    errors too); a rank that dies without reporting is named with its exit code.
    """
    import os
    import pickle
    import queue as queue_mod
    import tempfile

    mp = importlib.import_module("torch.multiprocessing").get_context("spawn")
    results = mp.Queue()
    with tempfile.TemporaryDirectory(prefix="fattn-dist-") as tmp:
        store = os.path.join(tmp, "store")
        group_seconds = timeout if group_timeout is None else group_timeout
        procs = [mp.Process(target=_local_main, args=(fn, r, world_size, store, group_seconds, threads, args, results),
                            daemon=True) for r in range(world_size)]
        for p in procs:
            p.start()
        reports: Dict[int, Tuple[bool, Any]] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(reports) < world_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(range(world_size)) - set(reports))
                    raise TimeoutError(f"launch_local: ranks {missing} did not finish within {timeout} s")
                try:
                    rank, ok, value = results.get(timeout=min(left, 1.0))
                    reports[rank] = (ok, pickle.loads(value))
                except queue_mod.Empty:
                    dead = [r for r, p in enumerate(procs) if r not in reports and p.exitcode is not None]
                    if dead:  # give a late report a moment to arrive, then name the rank
                        try:
                            rank, ok, value = results.get(timeout=2.0)
                            reports[rank] = (ok, pickle.loads(value))
                            continue
                        except queue_mod.Empty:
                            pass
                        raise RuntimeError(f"launch_local: rank {dead[0]} exited with code "
                                           f"{procs[dead[0]].exitcode} without reporting")
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
    failures = [(r, v) for r, (ok, v) in sorted(reports.items()) if not ok]
    if failures:
        text = "\n".join(f"--- rank {r}: {name}: {message}\n{tb}" for r, (name, message, tb) in failures)
        raise RuntimeError(f"launch_local: {len(failures)} rank(s) failed:\n{text}")
    return [reports[r][1] for r in range(world_size)]
