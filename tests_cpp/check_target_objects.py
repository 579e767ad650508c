"""No copy the linker may pick is compiled for a vector target.

An inline function or template instance with external linkage is emitted,
weak, by every object file that uses it, and the linker keeps one of the
copies for every caller. The library compiles each vector target's kernels
in a region of its own file (cpp/src/simd/target.hpp); a function written in
such a region with external linkage gets that target's instructions, and if
two files emit it (avx512_256 and its AVX2-compiled twin share their traits)
the copy kept may be the wider one: the AVX2 twin then dies of SIGILL on a
CPU without AVX-512, which only such a CPU shows. This check shows it on any
machine: no weak function in the library may use an AVX instruction (a
VEX/EVEX mnemonic, a ymm/zmm register or a mask register), since the library's
baseline, outside the regions, has none (CMake runs it only when no -m flag
widens the baseline).

Usage: check_target_objects.py NM OBJDUMP libfattn_core.a
"""

import re
import subprocess
import sys
from collections import defaultdict

AVX = re.compile(r"^\s*[0-9a-f]+:\s+(v[a-z0-9]+\b|\S+.*%(?:[yz]mm\d+|k[0-7])\b)")


def weak_functions(nm: str, lib: str) -> set[str]:
    out = subprocess.run([nm, "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    weak = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "W":  # a weak text symbol
            weak.add(parts[2])
    return weak


def avx_functions(objdump: str, lib: str) -> dict[str, set[str]]:
    """Mangled function name -> the archive members whose copy uses AVX."""
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", lib], check=True, capture_output=True, text=True).stdout
    found: dict[str, set[str]] = defaultdict(set)
    member = function = ""
    for line in out.splitlines():
        if m := re.match(r"^(\S+):\s+file format", line):
            member = m.group(1)
        elif m := re.match(r"^[0-9a-f]+ <(.+)>:$", line):
            function = m.group(1)
        elif function and AVX.match(line):
            found[function].add(member)
    return found


def main() -> int:
    nm, objdump, lib = sys.argv[1:4]
    weak = weak_functions(nm, lib)
    if not weak:
        print(f"no weak function in {lib}: nothing read?", file=sys.stderr)
        return 1
    bad = {name: members for name, members in avx_functions(objdump, lib).items() if name in weak}
    for name, members in sorted(bad.items()):
        shown = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip() or name
        print(f"weak function with AVX code in {', '.join(sorted(members))}: {shown}")
    if bad:
        print("Give what a target region defines internal linkage (cpp/src/simd/target.hpp).")
        return 1
    print(f"{len(weak)} weak functions, none with AVX code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
