"""fattn.integrations.distributed on real local ranks (torch.multiprocessing, gloo on 127.0.0.1,
each launch bounded in time): ring attention equals its own arithmetic model (fattn._ring.simulate,
bit for bit) and is within fattn.bounds.ring_bound of the exact attention, as is the one-process
flash_attn_prefill; decode_sharded gives every rank the same bits, within
fattn.bounds.sharded_decode_bound, empty shards included; the bytes sent are what the ring needs;
bad shards and a rank that stops raise on every rank (docs/numerics.md §10)."""

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import dist_workers  # noqa: E402

import fattn  # noqa: E402
from fattn import _ring, bounds, reference  # noqa: E402
from fattn.integrations import distributed as fd  # noqa: E402

LAUNCH_TIMEOUT = 240.0  # seconds for a whole launch (every case of a world size)


def to_numpy(t):
    if isinstance(t, fattn.QuantizedCache):
        return t
    t = t.detach()
    return t.float().numpy().astype(ml_dtypes.bfloat16) if t.dtype == torch.bfloat16 else t.numpy()


def tensor(rng, shape, dtype):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)


RING_CASES = {
    # world: [(dtype, B, H, H_kv, lengths, D, kwargs)]
    2: [(torch.float32, 1, 2, 2, [40, 40], 64, dict(causal=False)),
        (torch.bfloat16, 1, 4, 2, [48, 48], 128, dict(causal=True)),
        (torch.bfloat16, 2, 4, 1, [32, 32], 64, dict(causal=True, order="zigzag")),
        (torch.float32, 1, 4, 4, [70, 27], 64, dict(causal=True, sinks=True)),
        (torch.float16, 1, 2, 1, [40, 40], 64, dict(window=25, softcap=20.0)),
        (torch.bfloat16, 1, 8, 2, [64, 64], 64, dict(causal=False, sinks=True)),
        (torch.float32, 1, 2, 2, [24, 24], 512, dict(causal=True, kernel="llamacpp"))],
    4: [(torch.float32, 1, 4, 2, [16, 40, 33, 8], 64, dict(causal=True)),
        (torch.bfloat16, 1, 4, 4, [24] * 4, 64, dict(causal=False)),
        (torch.bfloat16, 1, 4, 2, [32] * 4, 128, dict(causal=True, order="zigzag", sinks=True)),
        (torch.float32, 2, 2, 1, [20] * 4, 64, dict(window=30)),
        (torch.float16, 1, 2, 2, [16] * 4, 64, dict(causal=True, softcap=10.0, order="zigzag"))],
}


def build_ring_cases(world, rng):
    cases = []
    for dtype, b, h, hkv, lengths, d, kw in RING_CASES[world]:
        total = sum(lengths)
        q, k, v = tensor(rng, (b, h, total, d), dtype), tensor(rng, (b, hkv, total, d), dtype), \
            tensor(rng, (b, hkv, total, d), dtype)
        q.requires_grad_(len(cases) == 0)  # the first case's query requires grad: read through a detached view
        kw = dict(kw)
        if kw.get("sinks"):
            kw["sinks"] = torch.from_numpy(rng.standard_normal(h).astype(np.float32))
        else:
            kw.pop("sinks", None)
        cases.append((q, k, v, lengths, kw))
    return cases


@pytest.mark.parametrize("world", [2, 4])
def test_ring_attention_on_local_ranks(world, rng):
    cases = build_ring_cases(world, rng)
    results = fd.launch_local(dist_workers.ring_cases, world, (cases,), timeout=LAUNCH_TIMEOUT, threads=1)
    for i, (q, k, v, lengths, kw) in enumerate(cases):
        order = kw.get("order", "contiguous")
        flag = bool(kw.get("causal")) or kw.get("window") is not None
        sinks = None if kw.get("sinks") is None else kw["sinks"].numpy()
        qn, kn, vn = (to_numpy(x) for x in (q, k, v))
        args = dict(causal=flag, window=kw.get("window"), softcap=kw.get("softcap", 0.0), sinks=sinks,
                    kernel=kw.get("kernel", "auto"))
        # 1. bit for bit its own arithmetic model, in one process
        model = _ring.simulate(qn, kn, vn, lengths, order=order, **args)
        for rank in range(world):
            out, lse, _, _ = results[rank][i]
            assert (to_numpy(out).view(np.uint8) == model[rank][0].astype(qn.dtype).view(np.uint8)).all(), (i, rank)
            assert (lse.numpy() == model[rank][1]).all()
        # 2. gathered, within the ring's bound of the exact attention, as the one-process call is
        gathered = fd.unshard([results[r][i][0] for r in range(world)], order=order) if order == "zigzag" else \
            torch.cat([results[r][i][0] for r in range(world)], dim=2)
        out = to_numpy(gathered)
        exact = reference.attention(qn, kn, vn, causal="top_left" if flag else None, window=args["window"],
                                    softcap=args["softcap"], sinks=sinks)
        bound = bounds.ring_bound(qn, kn, vn, world_size=world, order=order, lengths=lengths, **args)
        ok, err, allowed = bounds.within(out, exact, bound)
        assert ok.all(), (i, (err / allowed).max())
        single = fattn.flash_attn_prefill(qn, kn, vn, **args)
        single_bound, _ = bounds.prefill_bound(qn, kn, vn, **args)
        _, _, single_allowed = bounds.within(single, exact, single_bound)
        assert (np.abs(out.astype(np.float64) - single.astype(np.float64)) <= allowed + single_allowed).all()
        # 3. communication: K and V blocks once round the ring, only as far as needed, counted
        #    independently (the bytes handed to torch.distributed.isend) and by fattn's stats
        segments = _ring.shard_segments(lengths, order)
        b, hkv, d = k.shape[0], k.shape[1], k.shape[3]
        for rank in range(world):
            _, _, stats, sent = results[rank][i]
            blocks = _ring.blocks_sent(rank, segments, flag, args["window"])
            expected = [2 * b * hkv * lengths[j] * d * k.element_size() for j in blocks]
            assert sent == expected and stats.bytes_sent == sum(expected) and stats.messages_sent == len(blocks)
            assert max(sent, default=0) <= 2 * k.numel() * k.element_size() // sum(lengths) * max(lengths)
            assert stats.parts == len(_ring.parts(rank, segments, flag, args["window"]))
        if not flag:
            assert all(len(results[r][i][3]) == world - 1 for r in range(world))
        elif order == "contiguous" and args["window"] is None:
            assert sum(len(results[r][i][3]) for r in range(world)) == world * (world - 1) // 2


def test_ring_attention_in_subgroups(rng):
    """group=: two rings of 2 ranks inside a world of 4, on different data; each equals its own
    one-process model (the ring's neighbours are the group's, mapped to global ranks)."""
    cases = []
    for causal in (True, False):
        q, k, v = (tensor(rng, (1, 2, 48, 64), torch.float32) for _ in range(3))
        cases.append((q, k, v, dict(causal=causal)))
    results = fd.launch_local(dist_workers.ring_in_subgroups, 4, (cases,), timeout=LAUNCH_TIMEOUT, threads=1)
    for g, (q, k, v, kw) in enumerate(cases):
        model = _ring.simulate(q.numpy(), k.numpy(), v.numpy(), [24, 24], causal=kw["causal"])
        for local in range(2):
            out, stats = results[2 * g + local]
            assert stats.world_size == 2 and stats.rank == local
            assert (out.numpy().view(np.uint32) == model[local][0].view(np.uint32)).all(), (g, local)


DECODE_CASES = {
    2: [((4, 64), torch.float16, 2, [9, 30], {}),
        ((2, 4, 64), torch.float32, 1, [0, 17], dict(sinks=True)),
        ((4, 64), torch.bfloat16, 4, [40, 5], dict(mask="sliding_window", window=12))],
    4: [((2, 8, 64), torch.float16, 2, [10, 0, 33, 5], {}),
        ((4, 128), torch.float32, 2, [0, 0, 7, 0], dict(sinks=True)),
        ((4, 64), torch.float16, 4, [0, 0, 0, 0], {}),
        ((2, 4, 64), torch.float16, 1, [12, 20, 0, 9], dict(mask="sliding_window", window=25, softcap=30.0)),
        ((4, 64), "q8_0", 2, [40, 3, 0, 21], dict(sinks=True))],
}


@pytest.mark.parametrize("world", [2, 4])
def test_decode_sharded_on_local_ranks(world, rng):
    cases = []
    for q_shape, dtype, hkv, lens, kw in DECODE_CASES[world]:
        q = tensor(rng, q_shape, torch.float32)
        batch = q_shape[:-2]
        ks = [tensor(rng, batch + (hkv, n + 3, q_shape[-1]), torch.float32 if dtype == "q8_0" else dtype) for n in lens]
        vs = [tensor(rng, batch + (hkv, n + 3, q_shape[-1]), torch.float16 if dtype == "q8_0" else dtype) for n in lens]
        if dtype == "q8_0":  # quantized K shards (read in place), float16 V
            ks = [fattn.quantize_kv(x.numpy(), "q8_0") for x in ks]
        kw = dict(kw)
        if kw.get("sinks"):
            kw["sinks"] = rng.standard_normal(q_shape[-2]).astype(np.float32)
        cases.append((q, ks, vs, lens, kw))
    results = fd.launch_local(dist_workers.decode_cases, world, (cases,), timeout=LAUNCH_TIMEOUT, threads=1)
    for i, (q, ks, vs, lens, kw) in enumerate(cases):
        outs = [results[r][i][0].numpy() for r in range(world)]
        assert all(o.view(np.uint32).tolist() == outs[0].view(np.uint32).tolist() for o in outs)  # same bits
        qn = q.numpy()
        kn, vn = [to_numpy(x) for x in ks], [to_numpy(x) for x in vs]
        k_values = [x.dequantize() if isinstance(x, fattn.QuantizedCache) else x for x in kn]
        total = sum(lens)
        window = kw.get("window") if kw.get("mask") == "sliding_window" else None
        lo = max(0, total - window) if window else 0
        kc = np.concatenate([x[..., :n, :] for x, n in zip(k_values, lens)], axis=-2)
        vc = np.concatenate([x[..., :n, :] for x, n in zip(vn, lens)], axis=-2).astype(kc.dtype)  # exact
        sinks, softcap = kw.get("sinks"), kw.get("softcap", 0.0)
        if total == 0:
            assert (outs[0] == 0).all() and np.isneginf(results[0][i][1].numpy()).all()
        else:
            q4 = qn[..., None, :] if qn.ndim == 3 else qn[None, :, None]
            k4, v4 = (x[..., lo:, :] if qn.ndim == 3 else x[None, ..., lo:, :] for x in (kc, vc))
            exact = reference.attention(q4, k4, v4, softcap=softcap, sinks=sinks)[..., 0, :]
            exact = exact if qn.ndim == 3 else exact[0]
            bound = bounds.sharded_decode_bound(qn, kn, vn, lens, window=window, softcap=softcap, sinks=sinks)
            ok, err, allowed = bounds.within(outs[0], exact, bound)
            assert ok.all(), (i, (err / allowed).max())
            single = fattn.flash_attn_vec(qn, kc, vc, kv_seq_len=total, softcap=softcap, sinks=sinks,
                                          **({} if window is None else dict(mask="sliding_window", window=window)))
            single_bound = bounds.decode_bound(qn, kc[..., lo:, :], vc[..., lo:, :], kv_seq_len=total - lo,
                                               softcap=softcap, sinks=sinks)
            _, _, single_allowed = bounds.within(single, exact, single_bound)
            assert (np.abs(outs[0].astype(np.float64) - single) <= allowed + single_allowed).all()
        stats = results[0][i][2]
        payload = int(np.prod(q.shape[:-1])) * (q.shape[-1] + 1) * 4  # output and LSE, float32
        assert stats.bytes_sent == payload and stats.bytes_received == (world - 1) * payload


def test_bad_shards_raise_the_same_error_on_every_rank(rng):
    q, k, v = tensor(rng, (1, 2, 16, 64), torch.float32), tensor(rng, (1, 2, 16, 64), torch.float32), \
        tensor(rng, (1, 2, 16, 64), torch.float32)
    good = dict(args=(q, k, v), kwargs=dict(causal=True))
    cases = [
        ("ring", [good, dict(args=(q, k[..., :32], v[..., :32]), kwargs=dict(causal=True))]),   # D differs
        ("ring", [good, dict(args=(q, k.double(), v.double()), kwargs=dict(causal=True))]),     # float64
        ("ring", [good, dict(args=(q, k, v), kwargs=dict(causal=False))]),                      # causal differs
        ("ring", [dict(args=(q, k, v), kwargs=dict(order="zigzag")),
                  dict(args=(q[:, :, :15], k[:, :, :15], v[:, :, :15]), kwargs=dict(order="zigzag"))]),
        ("ring", [good, dict(args=(q, k[:, :, :8], v), kwargs=dict(causal=True))]),             # k shorter than q
        ("ring", [good, dict(args=(q.numpy(), k, v), kwargs=dict(causal=True))]),               # not a tensor
        ("decode", [dict(args=(q[0, :, 0], k[0], v[0]), kwargs=dict(kv_seq_len=4)),
                    dict(args=(q[0, :, 0], k[0], v[0]), kwargs=dict(kv_seq_len=17))]),          # > capacity
        ("decode", [dict(args=(q[0, :, 0], k[0], v[0]), kwargs=dict(kv_seq_len=4)),
                    dict(args=(q[0, :1, 0], k[0, :1], v[0, :1]), kwargs=dict(kv_seq_len=4))]),  # H differs
        ("decode", [dict(args=(q[0, :, 0], k[0], v[0]), kwargs=dict(kv_seq_len=4)),
                    dict(args=(q[0, :, 0], k[0], v[0]), kwargs=dict(kv_seq_len=-1))]),
        ("decode", [dict(args=(q[0, :, 0], k[0], v[0]), kwargs=dict(kv_seq_len=4)),
                    dict(args=(q[0, :, 1], k[0], v[0]), kwargs=dict(kv_seq_len=4))]),           # another query
    ]
    results = fd.launch_local(dist_workers.error_cases, 2, (cases,), timeout=LAUNCH_TIMEOUT, threads=1)
    expected = [("ValueError", "rank 1: "), ("TypeError", "rank 1: "), ("ValueError", "rank 1 has causal = False"),
                ("ValueError", "same, even number of positions"), ("ValueError", "rank 1: k, v: must hold the same"),
                ("TypeError", "rank 1: q: expected a CPU torch.Tensor"), ("ValueError", "rank 1: kv_seq_len"),
                ("ValueError", "rank 1 has q_shape = (1, 64)"), ("ValueError", "rank 1: kv_seq_len: must be >= 0"),
                ("ValueError", "rank 1 has q_crc32 = ")]
    for i, (kind, text) in enumerate(expected):
        got = [results[r][i] for r in range(2)]
        assert got[0] is not None and got[0] == got[1], (i, got)  # the same error on both ranks
        assert got[0][0] == kind and text in got[0][1], (i, got[0])


def test_a_rank_that_stops_makes_the_others_raise_not_hang(rng):
    q, k, v = (tensor(rng, (1, 2, 16, 64), torch.float32) for _ in range(3))
    # (launch_local bounds the run: a hang fails with TimeoutError; no clock is read here)
    results = fd.launch_local(dist_workers.one_rank_stops, 2, (q, k, v), timeout=120.0, threads=1,
                              group_timeout=30.0)
    assert results[1] is None
    assert results[0] is not None and results[0][0] == "RuntimeError" and "ring_attention: rank 0:" in results[0][1]


def test_a_rank_that_is_alive_but_never_calls_times_out_on_the_others(rng, tmp_path):
    """The process group's timeout (5 s here) ends the wait of a rank whose peer is alive but
    never calls (the peer stays alive until rank 0 has raised)."""
    q, k, v = (tensor(rng, (1, 2, 16, 64), torch.float32) for _ in range(3))
    results = fd.launch_local(dist_workers.one_rank_stops, 2, (q, k, v, str(tmp_path / "raised")), timeout=120.0,
                              threads=1, group_timeout=5.0)
    assert results[0] is not None and results[0][0] == "RuntimeError", results[0]
    assert "ring_attention: rank 0: the argument check" in results[0][1]


def test_calls_without_a_process_group_and_launch_errors():
    q = torch.zeros(1, 1, 4, 64)
    with pytest.raises(RuntimeError, match="no process group"):
        fd.ring_attention(q, q, q)
    with pytest.raises(RuntimeError, match="1 rank\\(s\\) failed:\n--- rank 1: ValueError: boom on rank 1"):
        fd.launch_local(dist_workers.rank_one_raises, 2, timeout=60.0)


def test_shard_and_unshard_round_trip():
    x = torch.arange(2 * 3 * 24 * 4).reshape(2, 3, 24, 4)
    for order in fd.ORDERS:
        for world in (1, 2, 3):
            pieces = [fd.shard(x, r, world, order=order) for r in range(world)]
            assert all(p.shape[2] == 24 // world for p in pieces)
            assert torch.equal(fd.unshard(pieces, order=order), x)
    assert torch.equal(fd.shard(x, 1, 2, order="zigzag")[0, 0, :, 0], x[0, 0, [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], 0])
    with pytest.raises(ValueError, match="not divisible"):
        fd.shard(x, 0, 5)
