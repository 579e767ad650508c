"""Memory does not grow with Lq * Lk (a memory assertion, not a timing one)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_peak_memory_stays_flat_at_long_sequences():
    # L = 8192: a materialised score matrix would be 256 MiB; fattn stays within 64 MiB.
    # (bench/memory_prefill.py runs the L = 16384 case; see the closing notes.)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "memory_prefill.py"), "8192", "64", "--causal"],
                          capture_output=True, text=True, check=True)
    growth = float(proc.stdout.split("inputs and outputs")[1].split("MiB")[0])
    assert growth < 64, proc.stdout
