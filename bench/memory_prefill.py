"""Peak memory of flash_attn_prefill beyond its inputs and outputs.

Usage: python bench/memory_prefill.py [L] [D] [--causal]
Default L = 16384, D = 64, H = 1, bf16: a kernel that materialised the
L x L score matrix would need 1 GiB more; fattn's per-thread tiles need a
few hundred KiB. Prints the peak resident-set growth in MiB.
"""
import resource
import sys
import time

import ml_dtypes
import numpy as np

import fattn


def peak_rss_mib():
    # VmHWM belongs to this process's address space. (getrusage's ru_maxrss
    # does not: Linux carries it over from the parent through fork and exec, so
    # a child of a large pytest process would report the parent's peak.)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak():
    try:  # Linux >= 4.0: "5" resets this process's peak resident set size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def current_rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    length = int(args[0]) if args else 16384
    head_dim = int(args[1]) if len(args) > 1 else 64
    causal = "--causal" in argv
    rng = np.random.default_rng(0)
    # Filled in small pieces, so no large temporary inflates the peak before the call.
    q, k, v = (np.empty((1, 1, length, head_dim), dtype=ml_dtypes.bfloat16) for _ in range(3))
    for x in (q, k, v):
        for i in range(0, length, 512):
            x[0, 0, i:i + 512] = rng.standard_normal((min(512, length - i), head_dim), dtype=np.float32)
    # Warm up the module and the thread pool on a small problem first, so their
    # one-time allocations count as the baseline, not as the kernel's.
    fattn.flash_attn_prefill(q[:, :, :64], k[:, :, :64], v[:, :, :64], causal=causal, return_lse=True)
    # Baseline: what is resident now (inputs included). The peak after the call
    # minus this can only over-state the kernel's own growth.
    reset_peak()
    before = current_rss_mib()
    t0 = time.perf_counter()
    result, lse2 = fattn.flash_attn_prefill(q, k, v, causal=causal, return_lse=True)
    elapsed = time.perf_counter() - t0
    # The result and its LSE are allocated by the call; count them as outputs.
    outputs_mib = (result.nbytes + lse2.nbytes) / 2 ** 20
    growth = peak_rss_mib() - before - outputs_mib
    print(f"L={length} D={head_dim} H=1 bf16 causal={causal}: {elapsed:.1f} s, peak RSS growth beyond "
          f"inputs and outputs {growth:.1f} MiB (a full score matrix would be "
          f"{length * length * 4 / 2 ** 20:.0f} MiB)")
    return growth


if __name__ == "__main__":
    main(sys.argv[1:])
