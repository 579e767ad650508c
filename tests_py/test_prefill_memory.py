"""Memory does not grow with Lq * Lk (a memory assertion, not a timing one)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_peak_memory_stays_flat_at_long_sequences():
    # The case, L = 16384, H = 1, D = 64: a materialised score matrix would be
    # 1 GiB; fattn must stay within 64 MiB beyond its inputs and outputs.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "memory_prefill.py"), "16384", "64"],
                          capture_output=True, text=True, check=True)
    growth = float(proc.stdout.split("inputs and outputs")[1].split("MiB")[0])
    assert growth < 64, proc.stdout
