"""Side-by-side benchmark: fattn against PyTorch's CPU scaled_dot_product_attention and NumPy,
in one process, with this machine's measured peaks.

    make bench                      # everything (several minutes)
    make bench BENCH_ARGS="--quick --section sdpa"
    .venv/bin/python bench/run.py --quick
    .venv/bin/python bench/run.py --section prefill|decode|qdecode|paged|blk|sdpa|short|variants|varlen|transformers|ring

Prints a table, writes bench/results/bench.csv and bench/results/prefill.png.
FLOP counts: prefill 4*B*H*D*(visible query-key pairs) (two matmuls, 2 flops per multiply-add);
fattn computes both Q.K^T and P.V with f32 fused multiply-adds (bf16 dot-product
instructions would change the seed kernels' rounding), so its attainable peak is the measured
f32 FMA rate. Decode is counted in bytes of K and V read (the kernel is bandwidth-bound):
fraction of the measured streaming-read bandwidth. The peaks come from bench/probe (the module
fattn_probe, which `make bench` builds into build/probe).
"""
import argparse
import copy
import csv
import os

# PyTorch's OpenMP workers spin-wait after each call by default; on a 2-core
# machine they would steal the cores from whatever runs next in this process
# (fattn's own pool included). Sleeping workers make the side-by-side fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import statistics
import sys
import time

import ml_dtypes
import numpy as np

import fattn

# The peak probes: a bench tool, not part of fattn (bench/probe; `make bench` builds it).
PROBE_BUILD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "probe")
sys.path.insert(0, PROBE_BUILD)
try:
    import fattn_probe
except ImportError as e:
    sys.exit(f"bench/run.py: the peak probe module fattn_probe is not built in {PROBE_BUILD} ({e}); "
             "`make bench-probe` builds it")

try:
    import torch
except ImportError:  # the torch column is skipped, with a note
    torch = None

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# Each system is warmed up by calling it for at least this long: one call
# left a short decode case up to 2x slower, because OpenBLAS's workers (NumPy's
# matmul in the previous column) still spin for a while after a call, and
# because after an idle moment this shared machine's cores take a while to
# come back to speed (a 0.3 s sleep before the calls made them slower, not
# faster).
WARM_UP_SECONDS = 0.3


def timed(fn, repeats):
    t_end = time.perf_counter() + WARM_UP_SECONDS
    fn()  # allocations, thread pool, caches
    while time.perf_counter() < t_end:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times)


def path_family(record):
    """The build_info()["isa_paths"] key of the path a record's fattn call ran with."""
    if record["kind"] in ("decode", "sdpa"):
        return record["kind"]
    if record["kind"] in ("qdecode", "paged"):
        return "decode"
    if record["kind"] == "short" and int(record["length"]) <= 8:  # the query rows
        return "prefill_short"
    return "prefill_f32" if record["dtype"] == "float32" else "prefill"


def timed_paths(fn, repeats):
    """fattn's default ("auto") and every native path this CPU runs, interleaved call by call
    (a shared machine's drift hits them alike): ((median s, spread s) of the default,
    {path: median s})."""
    names = ["auto"] + [p for p in fattn.available_isas() if p != "scalar"]
    times = {name: [] for name in names}
    for name in names:  # each path's own first call (its workspaces) outside the timing
        fattn.set_isa(name)
        fn()
    for r in range(repeats):
        # The order turns each round: a path called right after another's (AVX-512's clock,
        # the caches it leaves) would otherwise always pay for the same neighbour.
        for name in names[r % len(names):] + names[:r % len(names)]:
            fattn.set_isa(name)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    fattn.set_isa("auto")
    auto = times.pop("auto")
    return (statistics.median(auto), max(auto) - min(auto)), {n: statistics.median(t) for n, t in times.items()}


def default_over_fastest(record, default_s, paths):
    """How much slower the default's choice ran than the fastest native path. The path `auto`
    picked for the record's family was timed under its own name, interleaved like the others, so
    that time is compared with theirs: `auto` and that path run the same code, and their two
    medians differ only by this machine's noise (up to ~15% on the shared Intel Xeon of
    session 16). Without a pick among the paths (a forced ISA), the default's own time."""
    chosen = fattn.build_info()["isa_paths"].get(path_family(record))
    return (paths[chosen] if chosen in paths else default_s) / min(paths.values())


def path_note(default_s, paths):
    """"paths: avx2 1.00 avx512 0.95 ...": each native path's time over the default's."""
    return "paths (time / default's): " + " ".join(f"{n} {t / default_s:.2f}" for n, t in paths.items())


def numpy_attention(q, k, v, causal):
    q, k, v = (x.astype(np.float32) for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = np.matmul(q, k.transpose(0, 1, 3, 2)) / np.float32(np.sqrt(q.shape[-1]))
    if causal:
        lq, lk = s.shape[-2:]
        s = np.where(np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq), s, np.float32(-np.inf))
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.matmul(s / s.sum(-1, keepdims=True), v)


def torch_dtype(dt):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
            np.dtype(ml_dtypes.bfloat16): torch.bfloat16}[np.dtype(dt)]


def to_torch(x):
    return torch.from_numpy(x.astype(np.float32)).to(torch_dtype(x.dtype))


def prefill_case(rng, threads, h, h_kv, length, d, causal, dtype, kernel, repeats, with_numpy):
    q = rng.standard_normal((1, h, length, d), dtype=np.float32).astype(dtype)
    k = rng.standard_normal((1, h_kv, length, d), dtype=np.float32).astype(dtype)
    v = rng.standard_normal((1, h_kv, length, d), dtype=np.float32).astype(dtype)
    pairs = length * (length + 1) / 2 if causal else length * length
    flops = 4.0 * h * d * pairs
    rows = {}
    call = lambda: fattn.flash_attn_prefill(q, k, v, causal=causal, kernel=kernel)  # noqa: E731
    timed(call, 1)  # the warm-up
    rows["fattn"], paths = timed_paths(call, repeats)
    if torch is not None and kernel != "llamacpp":
        tq, tk, tv = to_torch(q), to_torch(k), to_torch(v)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        with torch.inference_mode():
            rows["torch"] = timed(lambda: sdpa(tq, tk, tv, is_causal=causal, enable_gqa=h != h_kv), repeats)
    if with_numpy:
        rows["numpy"] = timed(lambda: numpy_attention(q, k, v, causal), max(1, repeats // 2))
    return flops, rows, paths


def report_flops(records, rows, flops, peak, paths=None, **fields):
    """One table line and one CSV record per system of a flop-counted case (rows: system ->
    (median s, spread s)), against the f32 FMA peak and torch's time; with `paths` (each
    native path's median, timed_paths), fattn's line also says how the default compares."""
    torch_time = rows.get("torch", (None,))[0]
    for system, (med, spread) in rows.items():
        gflops = flops / med / 1e9
        frac = gflops / peak["f32_fma_gflops"]
        vs = torch_time / med if torch_time else float("nan")
        note = f"  {path_note(med, paths)}" if paths and system == "fattn" else ""
        print(f"{fields['case']:58s} {system:6s} {med * 1e3:10.3f} {spread * 1e3:8.3f} {gflops:8.1f} "
              f"{frac * 100:6.1f}% {vs:8.2f}{note}")
        extra = {}
        if paths and system == "fattn":
            extra = dict(default_over_fastest=default_over_fastest(dict(fields), med, paths))
        records.append(dict(fields, system=system, median_s=med, spread_s=spread, gflops=gflops,
                            fraction_of_peak=frac, **extra))


def decode_case(rng, threads, kv_len, dtype, repeats):
    h, h_kv, d = 16, 8, 256
    q = rng.standard_normal((h, d), dtype=np.float32)
    k = rng.standard_normal((h_kv, kv_len, d), dtype=np.float32).astype(dtype)
    v = rng.standard_normal((h_kv, kv_len, d), dtype=np.float32).astype(dtype)
    nbytes = 2.0 * k.nbytes
    rows = {"fattn": timed(lambda: fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len), repeats)}
    # The machine's bandwidth moves from second to second (shared memory
    # bus), so each fattn call is also paired with a plain streaming read of
    # the same K and V right after it: the ratio of the two times is the
    # fraction of the bandwidth available at that moment.
    paired = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len)
        t_kernel = time.perf_counter() - t0
        t_read = fattn_probe.time_read(k, threads) + fattn_probe.time_read(v, threads)
        paired.append(t_read / t_kernel)
    rows["fattn"] = rows["fattn"] + (statistics.median(paired), min(paired), max(paired))
    default, paths = timed_paths(lambda: fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len), repeats)
    # Each path relative to the default in that interleaved run, on the scale of the default's median above.
    paths = {n: t / default[0] * rows["fattn"][0] for n, t in paths.items()}
    if torch is not None:
        tq = torch.from_numpy(q)[None, :, None, :]
        tk, tv = (torch.from_numpy(x.astype(np.float32)).to(torch_dtype(dtype))[None] for x in (k, v))
        tq = tq.to(torch_dtype(dtype))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        with torch.inference_mode():
            rows["torch"] = timed(lambda: sdpa(tq, tk, tv, enable_gqa=True), repeats)
    rows["numpy"] = timed(lambda: numpy_attention(q[None, :, None, :], k[None], v[None], False), repeats)
    return nbytes, rows, paths


def quantized_decode_case(rng, repeats, records, peaks, kv_len):
    """The issue-20 table: H = H_kv = 8, D = 128, 2 threads, f16 against q8_0, q4_0 and tq4 caches
    (K and V), called in turn round by round (a shared machine's drift hits all three alike): median
    time, ratio to f16, GB/s of cache bytes read and its fraction of the streaming-read peak."""
    h, d = 8, 128
    q = rng.standard_normal((h, d), dtype=np.float32)
    k, v = (rng.standard_normal((h, kv_len, d), dtype=np.float32) for _ in range(2))
    caches = {"float16": (k.astype(np.float16), v.astype(np.float16))}
    for fmt in ("q8_0", "q4_0", "tq4"):
        caches[fmt] = (fattn.quantize_kv(k, fmt), fattn.quantize_kv(v, fmt))
    del k, v
    nbytes = {n: float(sum(getattr(c, "blocks", c).nbytes for c in kv)) for n, kv in caches.items()}
    calls = {n: (lambda kv=kv: fattn.flash_attn_vec(q, kv[0], kv[1], kv_seq_len=kv_len)) for n, kv in caches.items()}
    for fn in calls.values():
        timed(fn, 1)  # warm-up (0.3 s each)
    times = {n: [] for n in calls}
    for r in range(repeats):
        for n in list(calls)[r % len(calls):] + list(calls)[:r % len(calls)]:
            t0 = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t0)
    base = statistics.median(times["float16"])
    print(f"\nquantized decode (H=H_kv=8, D=128, kv_seq_len={kv_len}, t=2; issue 20 targets: q8_0 <= 0.65x, "
          f"q4_0 <= 0.45x, tq4 <= 0.5x the f16 time)\n{'cache':10s} {'MiB':>7s} {'median ms':>10s} {'spread':>8s} {'x f16':>7s} "
          f"{'GB/s':>7s} {'% read peak':>11s}")
    for n, t in times.items():
        med = statistics.median(t)
        gbs = nbytes[n] / med / 1e9
        frac = gbs / peaks[2]["read_gbytes"]
        print(f"{n:10s} {nbytes[n] / 2 ** 20:7.1f} {med * 1e3:10.3f} {(max(t) - min(t)) * 1e3:8.3f} {med / base:7.3f} "
              f"{gbs:7.1f} {frac * 100:10.1f}%")
        records.append(dict(kind="qdecode", case=f"{n} H=8 D=128 kv_seq_len={kv_len} t=2", system="fattn", dtype=n,
                            head_dim=d, h_kv=h, length=kv_len, causal=False, kernel="vec", threads=2,
                            median_s=med, spread_s=max(t) - min(t), gflops=gbs, fraction_of_peak=frac,
                            ratio_to_f16=med / base))


def paged_decode_case(rng, repeats, records, kv_len):
    """The issue-21 paged decode: block size 16, f16, B = 4 sequences of kv_len positions, H = 16,
    H_kv = 8, D = 128, 2 threads; the contiguous batch [B, H_kv, L, D] against the same rows in a
    shuffled pool [num_blocks, 16, H_kv, D] read through a block table, called in turn: median,
    spread and the paged call's speed as a fraction of the contiguous one's (target >= 90%)."""
    b, h, h_kv, d, bs = 4, 16, 8, 128, 16
    q = rng.standard_normal((b, h, d), dtype=np.float32)
    k, v = (rng.standard_normal((b, h_kv, kv_len, d), dtype=np.float32).astype(np.float16) for _ in range(2))
    per_seq = kv_len // bs
    table = rng.permutation(b * per_seq).reshape(b, per_seq).astype(np.int32)
    pools = []
    for x in (k, v):
        pool = np.empty((b * per_seq, bs, h_kv, d), np.float16)
        for i in range(b):
            pool[table[i]] = x[i].reshape(h_kv, per_seq, bs, d).transpose(1, 2, 0, 3)
        pools.append(pool)
    lens = np.full(b, kv_len)
    calls = {"contiguous": lambda: fattn.flash_attn_vec(q, k, v, kv_seq_len=kv_len),
             "paged": lambda: fattn.flash_attn_vec(q, pools[0], pools[1], kv_seq_len=lens, block_table=table)}
    assert np.array_equal(calls["contiguous"](), calls["paged"]())  # the same bits
    times = {n: [] for n in calls}
    for r in range(repeats):
        for n in list(calls)[r % 2:] + list(calls)[:r % 2]:
            t0 = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t0)
    base = statistics.median(times["contiguous"])
    print(f"\npaged decode (block size 16, f16, B=4 x {kv_len}, H=16, H_kv=8, D=128, t=2; issue 21 target: paged "
          f">= 90% of the contiguous speed)\n{'cache':12s} {'median ms':>10s} {'spread':>8s} {'speed':>7s}")
    for n, t in times.items():
        med = statistics.median(t)
        print(f"{n:12s} {med * 1e3:10.3f} {(max(t) - min(t)) * 1e3:8.3f} {base / med * 100:6.1f}%")
        records.append(dict(kind="paged", case=f"{n} B=4x{kv_len} H=16 H_kv=8 D=128 bs=16 t=2", system="fattn",
                            dtype="float16", head_dim=d, h_kv=h_kv, length=kv_len, causal=False, kernel="vec",
                            threads=2, median_s=med, spread_s=max(t) - min(t), gflops=float("nan"),
                            fraction_of_peak=float("nan"), speed_vs_contiguous=base / med))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few representative cases only")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--section", choices=["all", "prefill", "decode", "qdecode", "paged", "blk", "sdpa", "short",
                                          "variants", "varlen", "transformers", "ring"],
                    default="all")
    ap.add_argument("--plot-from", metavar="CSV", help="only redraw the plot from an earlier run's CSV")
    args = ap.parse_args(argv)
    if args.plot_from:
        with open(args.plot_from) as f:
            records = [dict(r, length=int(r["length"]), head_dim=int(r["head_dim"]), h_kv=int(r["h_kv"]),
                            threads=int(r["threads"]), causal=r["causal"] == "True", gflops=float(r["gflops"]))
                       for r in csv.DictReader(f)]
        plot(records, os.path.join(RESULTS, "prefill.png"))
        return
    os.makedirs(RESULTS, exist_ok=True)
    rng = np.random.default_rng(0)
    repeats = 3 if args.quick else args.repeats
    info = fattn.build_info()
    # Where it ran: on every table (this header) and every CSV row.
    machine = dict(cpu=info["cpu"] or "unknown", cpu_family_model=f"{info['cpu_family']}/{info['cpu_model']}",
                   cpu_features=" ".join(info["cpu_features"]))
    print(f"CPU: {machine['cpu']} (family/model {machine['cpu_family_model']}; {machine['cpu_features'] or 'no AVX2'})")
    print(f"fattn {fattn.__version__} isa={info['isa']} paths {info['isa_paths']}; torch "
          f"{torch.__version__ if torch is not None else 'not installed: its column is skipped'}")
    print(f"  ({info['isa_reason']})")
    peaks = {}
    for threads in (1, 2):
        peaks[threads] = fattn_probe.measure_peaks(threads, 0.3)
        p = peaks[threads]
        bf16 = f"{p['bf16_dot_gflops']:.0f} GFLOP/s" if p["bf16_dot_gflops"] > 0 else "n/a (no AVX512_BF16)"
        print(f"peaks, {threads} thread(s): f32 FMA {p['f32_fma_gflops']:.0f} GFLOP/s, bf16 dot {bf16}, "
              f"streaming read {p['read_gbytes']:.1f} GB/s")

    prefill = []
    lengths = [512, 2048] if args.quick else [512, 2048, 4096]
    dims = [128] if args.quick else [64, 128, 256]
    for threads in (2, 1):
        for dtype in (ml_dtypes.bfloat16, np.float32):
            for d in dims:
                for h_kv in (16, 4):
                    for causal in (False, True):
                        for length in lengths:
                            if threads == 1 and (h_kv != 16 or length != 2048 or d != 128):
                                continue  # the scaling line: one shape
                            prefill.append((threads, 16, h_kv, length, d, causal, dtype, "auto"))
        for kernel in ("auto", "llamacpp"):
            if threads == 2:
                prefill.append((threads, 16, 16, 2048 if not args.quick else 512, 512, False, ml_dtypes.bfloat16,
                                kernel))
    records = []
    if args.section not in ("all", "prefill"):
        prefill = []
    header = (f"{'case':58s} {'system':6s} {'median ms':>10s} {'spread':>8s} {'GFLOP/s':>8s} {'% peak':>7s} "
              f"{'x torch':>8s}")
    if prefill:
        print("\nprefill (B=1, H=16)\n" + header)
    for threads, h, h_kv, length, d, causal, dtype, kernel in prefill:
        fattn.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        with_numpy = length <= 2048 and threads == 2
        flops, rows, paths = prefill_case(rng, threads, h, h_kv, length, d, causal, dtype, kernel, repeats,
                                          with_numpy)
        name = (f"{np.dtype(dtype).name} D={d} H_kv={h_kv} L={length} {'causal' if causal else 'full'} "
                f"{kernel} t={threads}")
        report_flops(records, rows, flops, peaks[threads], paths, kind="prefill", case=name,
                     dtype=np.dtype(dtype).name,
                     head_dim=d, h_kv=h_kv, length=length, causal=causal, kernel=kernel, threads=threads)

    fattn.set_num_threads(2)
    if torch is not None:
        torch.set_num_threads(2)
    decode_dtypes = (np.float32, np.float16) if args.section in ("all", "decode") else ()
    if decode_dtypes:
        print("\ndecode (H=16, H_kv=8, D=256, nwg=32)\n" + header.replace("GFLOP/s", "  GB/s "))
    for dtype in decode_dtypes:
        for kv_len in ([1024, 8192] if args.quick else [1024, 8192, 32768]):
            nbytes, rows, paths = decode_case(rng, 2, kv_len, dtype, repeats * 4)
            name = f"{np.dtype(dtype).name} kv_seq_len={kv_len} cache {nbytes / 2 ** 20:.0f} MiB t=2"
            torch_time = rows.get("torch", (None,))[0]
            for system, (med, spread, *pair) in rows.items():
                gbs = nbytes / med / 1e9
                frac = gbs / peaks[2]["read_gbytes"]
                vs = torch_time / med if torch_time else float("nan")
                note = (f"  paired read: {pair[0] * 100:.0f}% [{pair[1] * 100:.0f}-{pair[2] * 100:.0f}]"
                        f"  {path_note(med, paths)}" if pair else "")
                print(f"{name:58s} {system:6s} {med * 1e3:10.3f} {spread * 1e3:8.3f} {gbs:8.1f} {frac * 100:6.1f}% "
                      f"{vs:8.2f}{note}")
                records.append(dict(kind="decode", case=name, system=system, dtype=np.dtype(dtype).name,
                                    head_dim=256, h_kv=8, length=kv_len, causal=False, kernel="vec", threads=2,
                                    median_s=med, spread_s=spread, gflops=gbs, fraction_of_peak=frac,
                                    paired_read_fraction=pair[0] if pair else float("nan"),
                                    **(dict(default_over_fastest=default_over_fastest(dict(kind="decode"), med, paths))
                                       if pair else {})))

    if args.section in ("all", "decode", "qdecode"):
        fattn.set_num_threads(2)
        quantized_decode_case(rng, repeats * 4, records, peaks, 8192 if args.quick else 32768)
    if args.section in ("all", "decode", "paged"):
        fattn.set_num_threads(2)
        paged_decode_case(rng, repeats * 4, records, 2048 if args.quick else 8192)
    if args.section in ("all", "blk"):
        blk_case(rng, repeats, records, peaks)
    if args.section in ("all", "sdpa"):
        sdpa_case(rng, repeats, records, peaks)
    if args.section in ("all", "variants"):
        variants_case(rng, repeats, records)
    if args.section in ("all", "varlen"):
        varlen_case(rng, repeats, records, machine["cpu"])
    if args.section in ("all", "short"):
        short_query_cases(rng, repeats, records, peaks, [1, 8, 33] if args.quick else [1, 4, 8, 16, 33])
    if args.section in ("all", "transformers"):
        transformers_case(repeats, records)
    if args.section in ("all", "ring") and torch is not None:
        import ring  # bench/ring.py: its worker must be importable by the spawned ranks
        ring.ring_case(repeats, records, machine["cpu"], quick=args.quick)
    targets(records)

    path = os.path.join(RESULTS, "bench.csv" if args.section == "all" else f"bench-{args.section}.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["kind", "case", "system", "dtype", "head_dim", "h_kv", "length", "causal",
                                               "kernel", "threads", "median_s", "spread_s", "gflops",
                                               "fraction_of_peak", "paired_read_fraction", "default_over_fastest", "ratio_to_f16", "speed_vs_contiguous", "cpu", "cpu_family_model",
                                               "cpu_features", "fattn_path"], restval="")
        writer.writeheader()
        for r in records:  # the path fattn's kernel family ran with (the other systems have none)
            family = path_family(r)
            writer.writerow(dict(r, **machine, fattn_path=info["isa_paths"][family] if r["system"] == "fattn" else ""))
    print(f"\nwrote {path}")
    if args.section == "all":
        plot(records, os.path.join(RESULTS, "prefill.png"))


def sdpa_case(rng, repeats, records, peaks):
    """The naive SDPA (seed 003) for the record: f32, L=512, D=128, H=16, causal, 2 threads,
    against torch's SDPA (a flash kernel, not naive) and NumPy, in GFLOP/s of the causal pairs."""
    h, length, d = 16, 512, 128
    q, k, v = (rng.standard_normal((1, h, length, d), dtype=np.float32) for _ in range(3))
    flops = 4.0 * h * d * length * (length + 1) / 2
    rows = {"fattn": timed(lambda: fattn.sdpa(q, k, v), repeats)}
    if torch is not None:
        tq, tk, tv = to_torch(q), to_torch(k), to_torch(v)
        with torch.inference_mode():
            rows["torch"] = timed(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True),
                                  repeats)
    rows["numpy"] = timed(lambda: numpy_attention(q, k, v, True), repeats)
    name = f"sdpa (naive, seed 003) f32 L={length} D={d} H={h} causal t=2"
    print(f"\n{'case':58s} {'system':6s} {'median ms':>10s} {'spread':>8s} {'GFLOP/s':>8s} {'%peak':>7s} {'x torch':>8s}")
    report_flops(records, rows, flops, peaks[2], kind="sdpa", case=name, dtype="float32", head_dim=d, h_kv=h,
                 length=length, causal=True, kernel="naive", threads=2)


def short_query_cases(rng, repeats, records, peaks, lengths):
    """A few query rows against a long key set (speculative-decoding checks, the tail of a chunked
    prefill): B=1, H=16, D=128, Lk=4096, non-causal, 2 threads. A block of fewer than 32 rows
    computes only the row vectors that hold a row."""
    fattn.set_num_threads(2)
    if torch is not None:
        torch.set_num_threads(2)
    h, d, lk = 16, 128, 4096
    print(f"\nshort query blocks (B=1, H={h}, D={d}, Lk={lk}, non-causal, t=2)\n"
          f"{'case':58s} {'system':6s} {'median ms':>10s} {'spread':>8s} {'GFLOP/s':>8s} {'%peak':>7s} {'x torch':>8s}")
    for dtype in (ml_dtypes.bfloat16, np.float32):
        k, v = (rng.standard_normal((1, h, lk, d), dtype=np.float32).astype(dtype) for _ in range(2))
        tk, tv = (to_torch(x) for x in (k, v)) if torch is not None else (None, None)
        for lq in lengths:
            q = rng.standard_normal((1, h, lq, d), dtype=np.float32).astype(dtype)
            call = lambda: fattn.flash_attn_prefill(q, k, v)  # noqa: E731
            timed(call, 1)  # the warm-up
            default, paths = timed_paths(call, repeats * 2)
            rows = {"fattn": default}
            if torch is not None:
                tq = to_torch(q)
                with torch.inference_mode():
                    rows["torch"] = timed(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv),
                                          repeats * 2)
            rows["numpy"] = timed(lambda: numpy_attention(q, k, v, False), repeats)
            flops = 4.0 * h * d * lq * lk
            name = f"{np.dtype(dtype).name} Lq={lq} Lk={lk} D={d} t=2"
            report_flops(records, rows, flops, peaks[2], paths, kind="short", case=name, dtype=np.dtype(dtype).name,
                         head_dim=d, h_kv=h, length=lq, causal=False, kernel="auto", threads=2)


def variants_case(rng, repeats, records):
    """Issue 19's variants against the plain call they extend, timed in alternation (one call of
    each per round, medians of the rounds): a sliding window of 512 at L = 4096 (no mask array;
    its tiles skipped) against causal alone, and sinks, softcap, q_offset against the same causal
    call at L = 2048. B=1, H=16, D=128, 2 threads."""
    fattn.set_num_threads(2)
    h, d = 16, 128
    sinks = rng.standard_normal(h).astype(np.float32)
    print(f"\nvariants (B=1, H={h}, D={d}, t=2; alternated, median of {repeats * 2} rounds)")
    for dtype in (ml_dtypes.bfloat16, np.float32):
        name = np.dtype(dtype).name
        q, k, v = (rng.standard_normal((1, h, 4096, d), dtype=np.float32).astype(dtype) for _ in range(3))
        q2, k2, v2 = q[:, :, :2048], k[:, :, :2048], v[:, :, :2048]
        chunk = q2[:, :, 1024:]  # the second half of a 2048-token prompt, against all its keys
        calls = {
            "causal L=4096": lambda: fattn.flash_attn_prefill(q, k, v, causal=True),
            "window=512 L=4096": lambda: fattn.flash_attn_prefill(q, k, v, window=512),
            "causal L=2048": lambda: fattn.flash_attn_prefill(q2, k2, v2, causal=True),
            "causal+sinks L=2048": lambda: fattn.flash_attn_prefill(q2, k2, v2, causal=True, sinks=sinks),
            "causal+softcap=30 L=2048": lambda: fattn.flash_attn_prefill(q2, k2, v2, causal=True, softcap=30.0),
            "chunk 1024 bottom_right": lambda: fattn.flash_attn_prefill(chunk, k2, v2, causal="bottom_right"),
            "chunk 1024 q_offset=1024": lambda: fattn.flash_attn_prefill(chunk, k2, v2, causal=True, q_offset=1024),
        }
        times = {key: [] for key in calls}
        for fn in calls.values():
            fn()  # warm-up
        for _ in range(repeats * 2):
            for key, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        med = {key: float(np.median(x)) for key, x in times.items()}
        spread = {key: float(np.percentile(x, 75) - np.percentile(x, 25)) for key, x in times.items()}
        against = {"window=512 L=4096": "causal L=4096", "causal+sinks L=2048": "causal L=2048",
                   "causal+softcap=30 L=2048": "causal L=2048", "chunk 1024 q_offset=1024": "chunk 1024 bottom_right"}
        for key in calls:
            note = ""
            if key in against:
                base = med[against[key]]
                note = (f"  {base / med[key]:.2f}x faster than {against[key]}" if key.startswith("window")
                        else f"  {(med[key] / base - 1) * 100:+.1f}% over {against[key]}")
            print(f"  {name:9s} {key:28s} {med[key] * 1e3:9.1f} ms (spread {spread[key] * 1e3:.1f}){note}")
            records.append(dict(kind="variants", case=f"{name} {key}", system="fattn", dtype=name, head_dim=d,
                                h_kv=h, length=4096 if "4096" in key else 2048, causal=True, kernel="auto",
                                threads=2, median_s=med[key], spread_s=spread[key], gflops=float("nan"),
                                fraction_of_peak=float("nan")))


def transformers_case(repeats, records):
    """A transformers model's forward with attn_implementation="fattn" against "sdpa" (issue 22):
    a Llama-shaped decoder (4 layers, hidden 512, 8 query heads and 4 KV heads of D = 64, random
    weights from its config), a batch of 8 prompts of 512 tokens, f32 and bf16, 2 threads (fattn
    and torch), under torch.no_grad. Two batches: without padding (transformers elides the mask:
    causal) and with the last 128 tokens of every other prompt padding (a boolean mask). The
    systems alternate call by call; medians of the rounds. The attention alone, one layer's shapes
    (causal), for scale: how much of the forward attention is."""
    try:
        import transformers
        import fattn.integrations.transformers as fattn_transformers
    except ImportError as e:
        print(f"\ntransformers: skipped ({e}; `make bench` installs torch, `make test-interop` transformers)")
        return
    if torch is None:
        print("\ntransformers: skipped (torch is not installed)")
        return
    fattn_transformers.register()
    fattn.set_num_threads(2)
    torch.set_num_threads(2)
    batch, length, layers, hidden, heads, kv_heads, d = 8, 512, 4, 512, 8, 4, 64
    config = transformers.LlamaConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=1408,
                                      num_hidden_layers=layers, num_attention_heads=heads,
                                      num_key_value_heads=kv_heads, head_dim=d, max_position_embeddings=length)
    torch.manual_seed(0)
    base = transformers.LlamaModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch, length))
    padded = torch.ones(batch, length, dtype=torch.long)
    padded[1::2, length - 128:] = 0
    rounds = repeats * 2
    print(f"\ntransformers {transformers.__version__}: LlamaModel forward, {layers} layers, hidden {hidden}, "
          f"H={heads} H_kv={kv_heads} D={d}, batch {batch} x {length} tokens, t=2 (alternated, median of {rounds} "
          f"rounds)")
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        models = {}
        for impl in ("sdpa", "fattn"):
            # A config of its own: set_attn_implementation writes the model's config, and a shared
            # one would leave both models on the implementation set last.
            m = transformers.LlamaModel(copy.deepcopy(config)).to(dtype).eval()
            m.load_state_dict(base.state_dict())
            m.set_attn_implementation(impl)
            assert m.config._attn_implementation == impl
            models[impl] = m
        assert models["sdpa"].config._attn_implementation == "sdpa"
        for batch_name, mask in (("no padding", None), ("padded", padded)):
            def call(m, mask=mask):
                with torch.no_grad():
                    return m(input_ids=ids, attention_mask=mask).last_hidden_state
            times = {impl: [] for impl in models}
            for m in models.values():
                call(m)  # warm-up
            for _ in range(rounds):
                for impl, m in models.items():
                    t0 = time.perf_counter()
                    call(m)
                    times[impl].append(time.perf_counter() - t0)
            med = {impl: statistics.median(t) for impl, t in times.items()}
            print(f"  {name:9s} {batch_name:10s} sdpa {med['sdpa'] * 1e3:8.1f} ms  fattn {med['fattn'] * 1e3:8.1f} ms"
                  f"  fattn/sdpa time {med['fattn'] / med['sdpa']:.2f}")
            for impl, t in times.items():
                records.append(dict(kind="transformers", case=f"llama forward {name} {batch_name}",
                                    system="torch" if impl == "sdpa" else "fattn", dtype=name, head_dim=d,
                                    h_kv=kv_heads, length=length, causal=True, kernel=impl, threads=2,
                                    median_s=med[impl], spread_s=max(t) - min(t), gflops=float("nan"),
                                    fraction_of_peak=float("nan")))
        q = torch.randn(batch, heads, length, d).to(dtype)
        k, v = (torch.randn(batch, kv_heads, length, d).to(dtype) for _ in range(2))
        layer = {
            "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
            "fattn": lambda: torch.ops.fattn.flash_attn_prefill(q, k, v, causal="top_left"),
        }
        one = {impl: timed(fn, repeats)[0] for impl, fn in layer.items()}
        print(f"  {name:9s} one layer's attention alone: sdpa {one['sdpa'] * 1e3:.1f} ms, fattn {one['fattn'] * 1e3:.1f} "
              f"ms ({layers} per forward)")


def varlen_case(rng, repeats, records, cpu):
    """Issue 21: one flash_attn_varlen call over 64 packed sequences of 32-512 tokens against the
    loop of per-sequence flash_attn_prefill calls it replaces (bf16, H=8, D=128, causal, 2 threads),
    timed in alternation (one of each per round; median and spread (IQR) of the rounds). The varlen
    call deals the (sequence, head, query block) items of all sequences to the threads at once; the
    loop pays a call, a parallel region and its tail per sequence, and allocates 64 outputs. The same
    two with out= given (no allocation) separate the two effects."""
    fattn.set_num_threads(2)
    h, d, count = 8, 128, 64
    lengths = rng.integers(32, 513, size=count)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    q, k, v = (rng.standard_normal((int(cu[-1]), h, d), dtype=np.float32).astype(ml_dtypes.bfloat16)
               for _ in range(3))
    spans = [(int(a), int(b)) for a, b in zip(cu[:-1], cu[1:])]
    out = np.empty_like(q)
    outs = [out[None, a:b] for a, b in spans]
    calls = {
        "varlen": lambda: fattn.flash_attn_varlen(q, k, v, cu, cu, causal=True),
        "loop": lambda: [fattn.flash_attn_prefill(q[None, a:b], k[None, a:b], v[None, a:b], causal=True,
                                                  layout="blhd") for a, b in spans],
        "varlen out=": lambda: fattn.flash_attn_varlen(q, k, v, cu, cu, causal=True, out=out),
        "loop out=": lambda: [fattn.flash_attn_prefill(q[None, a:b], k[None, a:b], v[None, a:b], causal=True,
                                                       layout="blhd", out=o) for (a, b), o in zip(spans, outs)],
    }
    packed, parts = calls["varlen"](), calls["loop"]()  # warm-up, and the promise: the same bits
    assert all(np.array_equal(packed[a:b].view(np.uint16), p[0].view(np.uint16)) for (a, b), p in zip(spans, parts))
    for fn in calls.values():
        fn()
    rounds = repeats * 4
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    med = {key: statistics.median(x) for key, x in times.items()}
    spread = {key: float(np.percentile(x, 75) - np.percentile(x, 25)) for key, x in times.items()}
    print(f"\nvarlen ({count} sequences of {lengths.min()}-{lengths.max()} tokens, total {int(cu[-1])}, bfloat16, "
          f"H={h}, D={d}, causal, t=2; alternated, median (IQR) of {rounds} rounds; CPU: {cpu})")
    labels = {"varlen": "one flash_attn_varlen call", "loop": f"{count} flash_attn_prefill calls",
              "varlen out=": "  the same with out=", "loop out=": "  the same with out="}
    for key in ("varlen", "loop", "varlen out=", "loop out="):
        print(f"  {labels[key]:32s} {med[key] * 1e3:9.2f} ms (spread {spread[key] * 1e3:.2f}, "
              f"best {min(times[key]) * 1e3:.2f})")
        records.append(dict(kind="varlen", case=f"varlen {key}", system="fattn", dtype="bfloat16", head_dim=d,
                            h_kv=h, length=int(cu[-1]), causal=True, kernel="auto", threads=2, median_s=med[key],
                            spread_s=spread[key], gflops=float("nan"), fraction_of_peak=float("nan")))
    best = {key: min(x) for key, x in times.items()}
    print(f"  loop / varlen: {med['loop'] / med['varlen']:.2f}x (issue 21: >= 1.2x; best rounds "
          f"{best['loop'] / best['varlen']:.2f}x); with out=: {med['loop out='] / med['varlen out=']:.2f}x (best "
          f"{best['loop out='] / best['varlen out=']:.2f}x)")


def blk_case(rng, repeats, records, peaks):
    """A sliding-window mask with and without its tile-skip map: the map must save the work it skips."""
    fattn.set_num_threads(2)
    length, window, d = 4096, 512, 128
    q, k, v = (rng.standard_normal((1, 16, length, d), dtype=np.float32).astype(ml_dtypes.bfloat16) for _ in range(3))
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    mask = np.where((j <= i) & (j > i - window), 0.0, -np.inf).astype(ml_dtypes.bfloat16)
    blk = fattn.flash_attn_prefill_blk(mask, head_dim=d)
    skipped = float((blk == 0).mean())
    plain = timed(lambda: fattn.flash_attn_prefill(q, k, v, mask), repeats)
    with_blk = timed(lambda: fattn.flash_attn_prefill(q, k, v, mask, blk=blk), repeats)
    trusted_blk = timed(lambda: fattn.flash_attn_prefill(q, k, v, mask, blk=blk, verify_blk=False), repeats)
    causal_blk = timed(lambda: fattn.flash_attn_prefill(q, k, v, mask, causal=True, blk=blk), repeats)
    print(f"\nsliding window {window}, bf16 D={d} H=16 L={length}, t=2: tile map skips {skipped * 100:.1f}% of the "
          f"tiles\n  mask only        {plain[0] * 1e3:8.1f} ms (spread {plain[1] * 1e3:.1f})"
          f"\n  mask + blk       {with_blk[0] * 1e3:8.1f} ms (spread {with_blk[1] * 1e3:.1f})  "
          f"{plain[0] / with_blk[0]:.1f}x faster (the map checked against the mask)"
          f"\n  mask + blk, verify_blk=False {trusted_blk[0] * 1e3:8.1f} ms  {plain[0] / trusted_blk[0]:.1f}x faster"
          f"\n  mask + blk + causal {causal_blk[0] * 1e3:5.1f} ms")
    for name, (med, spread) in (("mask", plain), ("mask+blk", with_blk), ("mask+blk unverified", trusted_blk),
                                ("mask+blk+causal", causal_blk)):
        records.append(dict(kind="blk", case=f"window{window} {name}", system="fattn", dtype="bfloat16", head_dim=d,
                            h_kv=16, length=length, causal="causal" in name, kernel="auto", threads=2,
                            median_s=med, spread_s=spread, gflops=float("nan"), fraction_of_peak=float("nan")))


def targets(records):
    """The speed issue's targets, read off this run."""
    fattn_rows = {(r["kind"], r["case"]): r for r in records if r["system"] == "fattn"}
    by_case = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["system"]] = r
    lines = []
    for r in records:
        if r["system"] != "fattn" or r["kind"] != "prefill" or r["threads"] != 2 or r["causal"]:
            continue
        causal_case = r["case"].replace(" full ", " causal ")
        c = fattn_rows.get(("prefill", causal_case))
        t = by_case[r["case"]].get("torch")
        parts = [f"{r['case']:48s} {r['fraction_of_peak'] * 100:5.1f}% of peak"]
        if t:
            parts.append(f"{t['median_s'] / r['median_s']:5.2f}x torch")
        if c:
            parts.append(f"causal {r['median_s'] / c['median_s']:4.2f}x faster")
        one = fattn_rows.get(("prefill", r["case"].replace("t=2", "t=1")))
        if one:
            parts.append(f"2 threads {one['median_s'] / r['median_s']:4.2f}x 1 thread")
        lines.append("  ".join(parts))
    for r in records:
        if r["system"] == "fattn" and r["kind"] == "decode":
            n = by_case[r["case"]].get("numpy")
            lines.append(f"{r['case']:48s} {r['fraction_of_peak'] * 100:5.1f}% of the run's read peak, "
                         f"{r['paired_read_fraction'] * 100:5.1f}% of a paired read  "
                         f"{n['median_s'] / r['median_s']:5.1f}x numpy")
    for r in records:
        if r["kind"] == "qdecode" and r["dtype"] != "float16":
            target = {"q8_0": 0.65, "q4_0": 0.45, "tq4": 0.5}[r["dtype"]]
            lines.append(f"{r['case']:48s} {r['ratio_to_f16']:.3f}x the f16 cache's time (issue 20: <= {target}x): "
                         f"{'met' if r['ratio_to_f16'] <= target else 'missed'}")
    for r in records:
        if r["kind"] == "paged" and r["case"].startswith("paged"):
            lines.append(f"{r['case']:48s} {r['speed_vs_contiguous'] * 100:.1f}% of the contiguous batch's speed "
                         f"(issue 21: >= 90%): {'met' if r['speed_vs_contiguous'] >= 0.9 else 'missed'}")
    ratios = [(r["default_over_fastest"], r["case"]) for r in records if "default_over_fastest" in r]
    if ratios:
        worst, case = max(ratios)
        lines.append(f"default path vs the fastest native path, {len(ratios)} prefill and decode cases: worst "
                     f"{(worst - 1) * 100:+.1f}% ({case}); within 5% in {sum(x <= 1.05 for x, _ in ratios)}")
    if lines:
        print("\ntargets (non-causal prefill at 2 threads; decode)\n" + "\n".join(lines))


def plot(records, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, dtype in zip(axes, ("bfloat16", "float32")):
        for system, style in (("fattn", "o-"), ("torch", "s--"), ("numpy", "^:")):
            for causal in (False, True):
                pts = sorted((r["length"], r["gflops"]) for r in records
                             if r["kind"] == "prefill" and r["system"] == system and r["dtype"] == dtype
                             and r["head_dim"] == 128 and r["h_kv"] == 16 and r["causal"] == causal
                             and r["threads"] == 2 and r["kernel"] == "auto")
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{system} {'causal' if causal else 'full'}")
        ax.set_title(f"prefill {dtype}, H=16, D=128, 2 threads")
        ax.set_xlabel("sequence length")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("GFLOP/s")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
