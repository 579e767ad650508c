"""What each rank runs in tests_py/test_distributed.py (a module of its own: the ranks are
started with the spawn method and import their function by name)."""
import os
import time

import numpy as np
import torch
import torch.distributed as dist

from fattn.integrations import distributed as fd


def _counting_p2p():
    """Wraps torch.distributed's isend so the test measures the bytes handed to it, apart from
    what fattn counts itself."""
    sent = []
    original = dist.isend

    def isend(tensor, *args, **kwargs):
        sent.append(tensor.numel() * tensor.element_size())
        return original(tensor, *args, **kwargs)

    dist.isend = isend
    return sent, original


def ring_cases(rank, world, cases):
    """cases: [(q, k, v, lengths, kwargs)] whole sequences; returns per case this rank's
    (output, lse, stats, measured sends) or the error it raised."""
    results = []
    for q, k, v, lengths, kw in cases:
        start = sum(lengths[:rank])
        order = kw.get("order", "contiguous")
        if order == "zigzag":
            shard = [fd.shard(x, rank, world, order=order) for x in (q, k, v)]
        else:
            shard = [x[:, :, start:start + lengths[rank]] for x in (q, k, v)]
        sent, original = _counting_p2p()
        try:
            out, lse = fd.ring_attention(*shard, return_lse=True, **kw)
            results.append((out, lse, fd.last_stats(), list(sent)))
        finally:
            dist.isend = original
    return results


def decode_cases(rank, world, cases):
    results = []
    for q, k_shards, v_shards, lens, kw in cases:
        out, lse = fd.decode_sharded(q, k_shards[rank], v_shards[rank], kv_seq_len=lens[rank], return_lse=True, **kw)
        results.append((out, lse, fd.last_stats()))
    return results


def error_cases(rank, world, cases):
    """cases: [(op, per-rank kwargs list)]; returns per case the (type name, message) raised."""
    results = []
    for op, per_rank in cases:
        fn = fd.ring_attention if op == "ring" else fd.decode_sharded
        args = per_rank[rank]
        try:
            fn(*args["args"], **args["kwargs"])
            results.append(None)
        except Exception as e:  # every rank must raise: the test compares them
            results.append((type(e).__name__, str(e)))
    return results


def one_rank_stops(rank, world, q, k, v, alive_until=None):
    """The last rank does not call: it returns at once, or, given ``alive_until`` (a file path),
    stays alive until the others have raised and written that file (so the others can only end
    their wait through the process group's timeout, whatever the machine's speed)."""
    if rank == world - 1:
        if alive_until is not None:
            for _ in range(3000):  # the launch's own timeout ends a hang long before this
                if os.path.exists(alive_until):
                    break
                time.sleep(0.1)
        return None
    try:
        fd.ring_attention(q, k, v, causal=True)
        return None
    except Exception as e:
        return (type(e).__name__, str(e))
    finally:
        if alive_until is not None:
            open(alive_until, "w").close()


def rank_one_raises(rank, world):
    if rank == 1:
        raise ValueError("boom on rank 1")
    return rank


def ring_in_subgroups(rank, world, cases):
    """Ranks split into two groups of world // 2 (0, 1, ... and the rest), each running its own
    ring on its own case through ``group=`` (context parallel inside data parallel)."""
    half = world // 2
    groups = [dist.new_group(list(range(half))), dist.new_group(list(range(half, world)))]
    mine = rank // half
    q, k, v, kw = cases[mine]
    local = rank % half
    shard = [fd.shard(x, local, half) for x in (q, k, v)]
    return fd.ring_attention(*shard, group=groups[mine], **kw), fd.last_stats()
