"""Ring attention and a sharded decode on 2 local ranks (torch.distributed, gloo on 127.0.0.1).

A sequence too long for one machine is split by position across processes: each rank holds a
shard of Q, K and V, the K/V blocks travel round the ring, and each rank merges its queries'
results over every block it needed (fattn.integrations.distributed; docs/numerics.md §10). Here
both ranks run on this machine through fd.launch_local; across machines the same
fd.ring_attention call runs under torchrun (README, "Across processes").

Checks, and exits non-zero if any fails:
  * the gathered causal output (contiguous and zigzag shards, bf16, GQA, one sink per head) is
    within fattn.bounds.ring_bound of the exact float64 attention;
  * a decode against a KV cache sharded over the two ranks (one shard shorter, f16) gives both
    ranks the same bits, within fattn.bounds.sharded_decode_bound of the exact attention;
  * each rank sent only what the ring needs (printed next to the block size).
Needs torch (make examples installs it). Run: make examples (or .venv/bin/python examples/ring_attention.py)
"""
import sys

import ml_dtypes
import numpy as np
import torch

import fattn
from fattn import bounds, reference
from fattn.integrations import distributed as fd

WORLD = 2
B, H, H_KV, L, D = 1, 8, 2, 512, 128


def rank_main(rank, world, q, k, v, sinks, q_dec, k_shards, v_shards, lens):
    """What each process runs: its shard of the prefill in both orders, then its part of a decode."""
    results = {}
    for order in ("contiguous", "zigzag"):
        shards = [fd.shard(x, rank, world, order=order) for x in (q, k, v)]
        out = fd.ring_attention(*shards, causal=True, sinks=sinks, order=order)
        results[order] = (out, fd.last_stats())
    o = fd.decode_sharded(q_dec, k_shards[rank], v_shards[rank], kv_seq_len=lens[rank])
    results["decode"] = (o, fd.last_stats())
    return results


def main():
    g = torch.Generator().manual_seed(23)
    q = torch.randn(B, H, L, D, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(B, H_KV, L, D, generator=g).to(torch.bfloat16) for _ in range(2))
    sinks = torch.randn(H, generator=g)
    q_dec = torch.randn(H, D, generator=g)
    lens = [700, 333]
    k_shards = [torch.randn(H_KV, 1024, D, generator=g).to(torch.float16) for _ in lens]
    v_shards = [torch.randn(H_KV, 1024, D, generator=g).to(torch.float16) for _ in lens]
    per_rank = fd.launch_local(rank_main, WORLD, (q, k, v, sinks, q_dec, k_shards, v_shards, lens), timeout=300,
                               threads=1)

    failed = False
    qn, kn, vn = (x.float().numpy().astype(ml_dtypes.bfloat16) for x in (q, k, v))
    exact = reference.attention(qn, kn, vn, causal="top_left", sinks=sinks.numpy())
    block = 2 * B * H_KV * (L // WORLD) * D * 2
    print(f"ring attention, {WORLD} ranks: bf16 B={B} H={H} H_kv={H_KV} L={L} D={D} causal, one sink per head; "
          f"a K/V block is {block / 2 ** 20:.2f} MiB")
    for order in ("contiguous", "zigzag"):
        out = fd.unshard([per_rank[r][order][0] for r in range(WORLD)], order=order)
        out = out.float().numpy().astype(ml_dtypes.bfloat16)
        bound = bounds.ring_bound(qn, kn, vn, world_size=WORLD, causal=True, sinks=sinks.numpy(), order=order)
        ok, err, allowed = bounds.within(out, exact, bound)
        sent = [per_rank[r][order][1].bytes_sent for r in range(WORLD)]
        waited = [per_rank[r][order][1].seconds_waiting * 1e3 for r in range(WORLD)]
        print(f"  {order:10s}  max |err| {err.max():.2e}  worst err/bound {(err / allowed).max():.3f}  "
              f"bytes sent per rank {sent}  waiting {', '.join(f'{w:.1f}' for w in waited)} ms  "
              f"{'ok' if ok.all() else 'OUT OF BOUND'}")
        failed |= not ok.all()
        expected = [block, 0] if order == "contiguous" else [block, block]  # causal: rank 1 sends nothing on
        if sent != expected:
            print(f"  {order}: sent {sent}, expected {expected}")
            failed = True

    outs = [per_rank[r]["decode"][0].numpy() for r in range(WORLD)]
    same = all(np.array_equal(o.view(np.uint32), outs[0].view(np.uint32)) for o in outs)
    kn_dec = [x.numpy() for x in k_shards]
    vn_dec = [x.numpy() for x in v_shards]
    kc = np.concatenate([x[:, :n] for x, n in zip(kn_dec, lens)], axis=1)
    vc = np.concatenate([x[:, :n] for x, n in zip(vn_dec, lens)], axis=1)
    exact_dec = reference.attention(q_dec.numpy()[None, :, None], kc[None], vc[None])[0, :, 0]
    bound = bounds.sharded_decode_bound(q_dec.numpy(), kn_dec, vn_dec, lens)
    ok, err, allowed = bounds.within(outs[0], exact_dec, bound)
    stats = per_rank[0]["decode"][1]
    print(f"decode_sharded, shards of {lens} positions (f16): ranks agree bit for bit: {same}; max |err| "
          f"{err.max():.2e}, worst err/bound {(err / allowed).max():.3f}; each rank sent {stats.bytes_sent} bytes "
          f"and received {stats.bytes_received}  {'ok' if ok.all() and same else 'FAILED'}")
    failed |= not (ok.all() and same)
    print(f"(CPU: {fattn.build_info()['cpu']})")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
