"""A/B of two revisions of the C++ core on one kernel case, alternated in one process tree.

    .venv/bin/python bench/ab.py REV_A REV_B [--rounds 7] [--case "decode f32 8192 8 20"] ...

Each revision (anything `git rev-parse` takes; "WORKTREE" = the files as they are now) is
exported into build/ab/<name>/src, its core built (Release) into build/ab/<name>/build, and
bench/ab/driver.cpp (from the current tree) linked against it. Then, for each case, the two
drivers run alternately `--rounds` times; the table gives each side's median of the rounds'
medians, the spread, and B/A. On a shared machine whose speed drifts over minutes this
compares like with like, where two separate `make bench` runs may not. Cases are the
driver's arguments (see bench/ab/driver.cpp): "prefill <f32|bf16> <D> <L> <repeats>",
"sdpa <f32|bf16> <D> <L> <repeats>" or "decode <f32|f16> <kv_len> <H_kv> <repeats>".
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ["decode f32 2048 1 200", "decode f32 8192 8 20", "decode f16 8192 8 20", "prefill f32 128 2048 3"]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def build(rev: str) -> Path:
    """The driver linked against `rev`'s core; built once per revision."""
    if rev == "WORKTREE":
        name, src = "worktree", ROOT
    else:
        sha = run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True).stdout.strip()
        name, src = sha, ROOT / "build" / "ab" / sha / "src"
        if not src.exists():
            src.mkdir(parents=True)
            archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", sha], stdout=subprocess.PIPE)
            run(["tar", "-x", "-C", str(src)], stdin=archive.stdout)
            archive.wait()
    out = ROOT / "build" / "ab" / name / "build"
    run(["cmake", "-S", str(src), "-B", str(out), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DFATTN_INSTALL=OFF"],
        stdout=subprocess.DEVNULL)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL")  # as `cmake --build` would (a shared machine: 2)
    run(["ninja", "-C", str(out), *(["-j", jobs] if jobs else []), "fattn_core"], stdout=subprocess.DEVNULL)
    eigen = run(["pkg-config", "--cflags", "eigen3"], capture_output=True).stdout.split()
    driver = out / "ab_driver"
    # -march=native for the driver's own read loop only; the core picks its path at run time.
    run(["g++", "-O3", "-march=native", "-std=c++17", f"-I{src / 'cpp' / 'include'}", *eigen,
         str(ROOT / "bench" / "ab" / "driver.cpp"),
         str(out / "libfattn_core.a"), "-lpthread", "-o", str(driver)])
    return driver


def measure(driver: Path, case: str) -> dict:
    text = run([str(driver), *case.split()], capture_output=True).stdout
    return {k: float(v) for k, v in (line.split() for line in text.splitlines())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--case", action="append", help="driver arguments (repeatable); default: a decode/prefill set")
    args = ap.parse_args()
    if subprocess.run(["which", "ninja"], capture_output=True).returncode != 0:
        os.environ["PATH"] = f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"  # ninja/cmake from make's venv
    drivers = {"A": build(args.rev_a), "B": build(args.rev_b)}
    print(f"A = {args.rev_a}, B = {args.rev_b}; {args.rounds} rounds, alternated")
    for case in args.case or DEFAULT_CASES:
        results = {"A": [], "B": []}
        for _ in range(args.rounds):
            for side in ("A", "B"):
                results[side].append(measure(drivers[side], case))
        line = f"{case:28s}"
        for key in results["A"][0]:
            a = statistics.median(r[key] for r in results["A"])
            b = statistics.median(r[key] for r in results["B"])
            spread = max(r[key] for r in results["B"]) - min(r[key] for r in results["B"])
            line += f"  {key} A {a:.3f} B {b:.3f} (B spread {spread:.3f}) B/A {b / a:.3f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
