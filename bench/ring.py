"""Issue 23's benchmark: ring attention on 2 local ranks x 1 thread against one process x 2
threads, at L = 8192 (bfloat16, D = 128, H = 16, causal), with the time spent communicating.
`bench/run.py --section ring` runs it (a module of its own: the ranks are spawned and import the
worker by name).

Each rank builds the same whole sequence from a seed and keeps its shard, so no input travels
through the launcher. A timed call starts after a barrier; its time is the slowest rank's. Rows:
contiguous and zigzag shards, each with the blocks' transfer overlapped with the kernel (the
default) and without (the transfer waited for first: its full time shows as communication)."""
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist

import fattn
from fattn.integrations import distributed as fd


def inputs(length, heads, head_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, heads, length, head_dim, generator=g).to(torch.bfloat16) for _ in range(3)]


def worker(rank, world, length, heads, head_dim, repeats, configs):
    q, k, v = inputs(length, heads, head_dim)
    results = {}
    for order, overlap in configs:
        shards = [fd.shard(x, rank, world, order=order) for x in (q, k, v)]
        fd.ring_attention(*shards, causal=True, order=order, overlap=overlap)  # warm-up
        rows = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            fd.ring_attention(*shards, causal=True, order=order, overlap=overlap)
            elapsed = time.perf_counter() - t0
            s = fd.last_stats()
            rows.append((elapsed, s.seconds_compute, s.seconds_waiting, s.bytes_sent, s.bytes_received))
        results[(order, overlap)] = rows
    return results


def ring_case(repeats, records, cpu, quick=False):
    length, heads, head_dim = (2048 if quick else 8192), 16, 128
    world = 2
    flops = 4.0 * heads * head_dim * length * (length + 1) / 2
    print(f"\nring attention (issue 23): bf16 D={head_dim} H={heads} L={length} causal; {world} local ranks x 1 thread "
          f"(gloo on 127.0.0.1) against 1 process x 2 threads; median (spread) of {repeats}; CPU: {cpu}")
    fattn.set_num_threads(2)
    torch.set_num_threads(2)
    q, k, v = inputs(length, heads, head_dim)
    one = []
    fattn.flash_attn_prefill(q, k, v, causal=True)
    for _ in range(repeats):
        t0 = time.perf_counter()
        fattn.flash_attn_prefill(q, k, v, causal=True)
        one.append(time.perf_counter() - t0)
    torch_times = []
    with torch.inference_mode():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            torch_times.append(time.perf_counter() - t0)
    base = statistics.median(one)
    print(f"  {'1 process x 2 threads, flash_attn_prefill':52s} {base * 1e3:9.1f} ms (spread "
          f"{(max(one) - min(one)) * 1e3:.1f})  {flops / base / 1e9:6.1f} GFLOP/s")
    print(f"  {'1 process x 2 threads, torch SDPA (for scale)':52s} {statistics.median(torch_times) * 1e3:9.1f} ms")
    records.append(dict(kind="ring", case="1 process x 2 threads", system="fattn", dtype="bfloat16",
                        head_dim=head_dim, h_kv=heads, length=length, causal=True, kernel="auto", threads=2,
                        median_s=base, spread_s=max(one) - min(one), gflops=flops / base / 1e9,
                        fraction_of_peak=float("nan")))
    configs = [("contiguous", True), ("zigzag", True), ("contiguous", False), ("zigzag", False)]
    per_rank = fd.launch_local(worker, world, (length, heads, head_dim, repeats, configs), timeout=1800.0, threads=1)
    for order, overlap in configs:
        rows = [per_rank[r][(order, overlap)] for r in range(world)]
        wall = [max(rows[r][i][0] for r in range(world)) for i in range(repeats)]
        med = statistics.median(wall)
        waiting = [statistics.median(x[2] for x in rows[r]) for r in range(world)]
        compute = [statistics.median(x[1] for x in rows[r]) for r in range(world)]
        sent = [rows[r][0][3] for r in range(world)]
        name = f"{world} ranks x 1 thread, {order}, {'overlapped' if overlap else 'not overlapped'}"
        print(f"  {name:52s} {med * 1e3:9.1f} ms (spread {(max(wall) - min(wall)) * 1e3:.1f})  "
              f"{flops / med / 1e9:6.1f} GFLOP/s  {base / med:4.2f}x the 1-process time\n"
              f"      per rank: compute {', '.join(f'{c * 1e3:.0f}' for c in compute)} ms; "
              f"waiting on communication {', '.join(f'{w * 1e3:.1f}' for w in waiting)} ms; "
              f"sent {', '.join(f'{s / 2 ** 20:.1f}' for s in sent)} MiB")
        records.append(dict(kind="ring", case=name, system="fattn", dtype="bfloat16", head_dim=head_dim, h_kv=heads,
                            length=length, causal=True, kernel="auto", threads=1, median_s=med,
                            spread_s=max(wall) - min(wall), gflops=flops / med / 1e9, fraction_of_peak=float("nan")))
