"""The schedule of sequence-parallel ("ring") attention, in plain Python (no torch).

Which global positions each rank holds (its *segments*), which (query rows, key block) pairs a
rank computes and in what order, and how far round the ring each K/V block travels.
:mod:`fattn.integrations.distributed` runs this schedule on ``torch.distributed``;
:func:`fattn.bounds.ring_bound` evaluates the error bound of the very same schedule
(docs/numerics.md §10). Keeping both on one schedule is what lets a test hold the distributed
result against a bound derived for exactly the merges it did.

Positions are global: the sequence is split across ``W`` ranks, rank ``r``'s local shard is the
concatenation of its segments. Query at position ``p`` sees key ``t`` always (not causal), or iff
``t <= p`` (causal), and also ``t > p - window`` with a window (which implies causal).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: How a sequence is split across ranks: ``"contiguous"`` (rank r holds positions
#: ``sum(L[:r]) .. sum(L[:r+1]) - 1``) or ``"zigzag"`` (the sequence cut into 2W equal chunks, rank
#: r holding chunks r and 2W-1-r, which balances causal work).
ORDERS = ("contiguous", "zigzag")


@dataclass(frozen=True)
class Segment:
    """A run of consecutive global positions ``start .. start + length - 1`` held by one rank,
    at local rows ``offset .. offset + length - 1`` of its shard."""
    start: int
    length: int
    offset: int


@dataclass(frozen=True)
class Part:
    """One prefill call of the schedule: local query rows ``row_begin .. row_end - 1`` of query
    segment ``q_seg`` against keys ``key_begin .. key_end - 1`` of rank ``block``'s K/V block (in
    the block's local order: its segments concatenated), which the rank holds at ring step
    ``step``. ``causal``: row i of the call sees the call's keys ``t <= q_offset + i``
    (``flash_attn_prefill``'s ``q_offset``), and with a window ``t > q_offset + i - window``;
    otherwise every key. The calls of a step together cover exactly the (query, key) pairs the
    global mask makes visible, each once."""
    step: int
    block: int
    q_seg: int
    row_begin: int
    row_end: int
    key_begin: int
    key_end: int
    causal: bool
    q_offset: int


def shard_segments(lengths: Sequence[int], order: str) -> List[List[Segment]]:
    """Each rank's segments, for shards of ``lengths[r]`` positions (every one >= 1)."""
    world = len(lengths)
    if world < 1 or any(n < 1 for n in lengths):
        raise ValueError(f"lengths: every shard needs at least one position, got {list(lengths)}")
    if order == "contiguous":
        result, start = [], 0
        for n in lengths:
            result.append([Segment(start, n, 0)])
            start += n
        return result
    if order == "zigzag":
        if len(set(lengths)) != 1 or lengths[0] % 2:
            raise ValueError(f'order="zigzag": every rank needs the same, even number of positions, got {list(lengths)}')
        c = lengths[0] // 2
        return [[Segment(r * c, c, 0), Segment((2 * world - 1 - r) * c, c, c)] for r in range(world)]
    raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")


def visible_rows(q: Segment, k: Segment, causal: bool, window: Optional[int]) -> Optional[Tuple[int, int, int]]:
    """``(row_begin, row_end, q_offset)``: the query rows of ``q`` that see at least one key of
    ``k``, and their offset from ``k``'s first position; None if no row sees any key."""
    if not causal and window is None:
        return 0, q.length, 0
    begin = max(0, k.start - q.start)  # rows before the block's first key see none of it
    end = q.length
    if window is not None:  # row i sees some key iff q.start + i - window < k's last position
        end = min(end, k.start + k.length - 1 + window - q.start)
    if begin >= end:
        return None
    return begin, end, q.start + begin - k.start


def needs(rank: int, block: int, segments: Sequence[Sequence[Segment]], causal: bool, window: Optional[int]) -> bool:
    """Whether any query of ``rank`` sees any key of ``block``."""
    return any(visible_rows(q, k, causal, window) is not None for q in segments[rank] for k in segments[block])


def block_at(rank: int, step: int, world: int) -> int:
    """The block (the rank it came from) that ``rank`` holds at ``step``: blocks move one rank
    forward per step, so at step s rank r holds rank (r - s)'s."""
    return (rank - step) % world


def forwards(rank: int, step: int, segments: Sequence[Sequence[Segment]], causal: bool,
             window: Optional[int]) -> bool:
    """Whether ``rank`` sends the block it holds at ``step`` on to rank + 1: only while a rank
    further round the ring still needs it (causal attention stops each block at the last rank)."""
    world = len(segments)
    block = block_at(rank, step, world)
    return any(needs((block + later) % world, block, segments, causal, window) for later in range(step + 1, world))


def _one_call(q: Segment, block: Sequence[Segment]) -> Optional[Tuple[int, int, int]]:
    """Causal, no window: the block's keys a query row sees are a prefix of the block's local
    order (its segments are in increasing positions), ``count(p)`` keys for the row at position p.
    One call covers the query segment when, from the first row that sees any key, the count
    grows by one per row up to its last value m: then rows ``begin ..`` with keys ``0 .. m - 1``
    and ``q_offset = count(first row) - 1`` are exactly the visible pairs. Returns
    ``(row_begin, m, q_offset)``, or None if no row sees a key or the counts have another shape
    (the caller then makes one call per key segment)."""
    import numpy as np

    positions = q.start + np.arange(q.length)
    count = np.zeros(q.length, dtype=np.int64)
    for k in block:
        count += np.clip(positions - k.start + 1, 0, k.length)
    seen = np.flatnonzero(count > 0)
    if seen.size == 0:
        return None
    begin = int(seen[0])
    m = int(count[-1])
    expected = np.minimum(count[begin] + np.arange(q.length - begin), m)
    if not np.array_equal(count[begin:], expected):
        return None
    return begin, m, int(count[begin]) - 1


def parts(rank: int, segments: Sequence[Sequence[Segment]], causal: bool, window: Optional[int]) -> List[Part]:
    """The prefill calls ``rank`` makes, in the order it makes and merges them: per step and query
    segment one call over the block's keys where one call can express the mask (always without
    causal or window; causal zigzag and contiguous shards too), else one per key segment."""
    world = len(segments)
    result = []
    for step in range(world):
        block = block_at(rank, step, world)
        length = sum(k.length for k in segments[block])
        for qi, q in enumerate(segments[rank]):
            if not causal and window is None:
                result.append(Part(step, block, qi, 0, q.length, 0, length, False, 0))
                continue
            one = _one_call(q, segments[block]) if window is None else None
            if one is not None:
                begin, m, offset = one
                # Rows that all see the same m keys need no mask: a plain call (the causal kernel
                # would check every tile against the diagonal for nothing).
                full = offset + 1 >= m
                result.append(Part(step, block, qi, begin, q.length, 0, m, not full, 0 if full else offset))
                continue
            for k in segments[block]:
                rows = visible_rows(q, k, causal, window)
                if rows is not None:
                    result.append(Part(step, block, qi, rows[0], rows[1], k.offset, k.offset + k.length, True,
                                       rows[2]))
    return result


def blocks_sent(rank: int, segments: Sequence[Sequence[Segment]], causal: bool, window: Optional[int]) -> List[int]:
    """The blocks ``rank`` sends during one call, in order (the communication volume is their
    positions times 2·B·H_kv·D·element size: K and V travel together)."""
    world = len(segments)
    return [block_at(rank, s, world) for s in range(world - 1) if forwards(rank, s, segments, causal, window)]


class RankResult:
    """One rank's running result: its query shard's float32 output and LSE, per segment, into
    which each ring step's parts are merged as their K/V block arrives. The arithmetic of ring
    attention lives here, apart from the transport: ``fattn.integrations.distributed`` feeds it
    the blocks ``torch.distributed`` brings, a test can feed it NumPy blocks in one process, and
    both give the same bits (docs/numerics.md §10)."""

    def __init__(self, q: Any, rank: int, segments: Sequence[Sequence[Segment]], *, causal: bool,
                 window: Optional[int], scale: Optional[float], softcap: float, kernel: str):
        import numpy as np

        self.q, self.rank, self.segments = q, rank, segments
        self.causal, self.window = causal, window
        self.kw: Dict[str, Any] = dict(scale=scale, softcap=softcap, window=window, kernel=kernel)
        self.parts = parts(rank, segments, causal, window)
        b, h, _, d = q.shape
        self.out = [np.zeros((b, h, s.length, d), np.float32) for s in segments[rank]]
        self.lse = [np.full((b, h, s.length), -np.inf, np.float32) for s in segments[rank]]
        self.computed = 0

    def absorb(self, step: int, k_block: Any, v_block: Any) -> None:
        """Compute this rank's parts of ``step`` against the K/V block it holds then (rank
        ``block_at(rank, step)``'s, ``[B, H_kv, L_block, D]``) and merge them in."""
        import numpy as np

        from . import _core
        from ._decode import merge_attention
        from ._prefill import flash_attn_prefill

        for part in self.parts:
            if part.step != step:
                continue
            qs = self.segments[self.rank][part.q_seg]
            rows = slice(part.row_begin, part.row_end)
            keys = slice(part.key_begin, part.key_end)
            o, lse = flash_attn_prefill(self.q[:, :, qs.offset + part.row_begin:qs.offset + part.row_end],
                                        k_block[:, :, keys], v_block[:, :, keys], causal=part.causal,
                                        q_offset=part.q_offset, return_lse=True, **self.kw)
            acc_o, acc_l = self.out[part.q_seg][:, :, rows], self.lse[part.q_seg][:, :, rows]
            # Rows no part has reached yet are 0 with LSE -inf, and a merge with such a part is
            # exact (its weight is exactly 0), so the first part is copied instead: the same bits.
            if np.isneginf(acc_l).all():
                acc_o[...], acc_l[...] = o, lse
            elif acc_o.flags.c_contiguous and acc_l.flags.c_contiguous:
                # merge_attention's arithmetic, written into the running result in place (the core
                # reads each row before writing it), without a temporary of the query shard's size
                d = acc_o.shape[-1]
                _core.merge_attention([acc_o.reshape(-1, d), np.ascontiguousarray(o, np.float32).reshape(-1, d)],
                                      [acc_l.reshape(-1), lse.reshape(-1)], acc_o.reshape(-1, d), acc_l.reshape(-1),
                                      None, 0, 1)
            else:
                acc_o[...], acc_l[...] = merge_attention([acc_o, o], [acc_l, lse], return_lse=True)
            self.computed += 1

    def finish(self, sinks: Any = None) -> Tuple[Any, Any]:
        """The shard's float32 output ``[B, H, L_r, D]`` and LSE ``[B, H, L_r]`` (over the keys), in
        local row order; the sinks enter here, once (``merge_attention(..., sinks=)``)."""
        import numpy as np

        from ._decode import merge_attention

        outs = [o if sinks is None else merge_attention([o], [lse], sinks=sinks) for o, lse in zip(self.out, self.lse)]
        return np.concatenate(outs, axis=2), np.concatenate(self.lse, axis=2)


def simulate(q: Any, k: Any, v: Any, lengths: Sequence[int], *, order: str = "contiguous", causal: bool = False,
             window: Optional[int] = None, scale: Optional[float] = None, softcap: float = 0.0, kernel: str = "auto",
             sinks: Any = None) -> List[Tuple[Any, Any]]:
    """Every rank's ``RankResult.finish()`` for whole-sequence NumPy arrays q ``[B, H, L, D]``, k/v
    ``[B, H_kv, L, D]`` split into shards of ``lengths`` in ``order``, in one process: the schedule
    and arithmetic of the distributed call without the transport (its bits, by construction)."""
    import numpy as np

    segments = shard_segments(lengths, order)
    causal = causal or window is not None

    def local(x: Any, rank: int) -> Any:
        return np.concatenate([x[:, :, s.start:s.start + s.length] for s in segments[rank]], axis=2)

    results = []
    for rank in range(len(lengths)):
        state = RankResult(local(q, rank), rank, segments, causal=causal, window=window, scale=scale,
                           softcap=softcap, kernel=kernel)
        for step in range(len(lengths)):
            block = block_at(rank, step, len(lengths))
            state.absorb(step, local(k, block), local(v, block))
        results.append(state.finish(sinks))
    return results
