# The two commands of the README. Each does every set-up step itself on a
# fresh machine (Debian packages with apt-get, Python packages in .venv with
# pip), and a second run reuses what is already built.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
CPP_BUILD := $(BUILD)/cpp
DEB_PACKAGES := libeigen3-dev libgtest-dev g++ make
PY_PACKAGES := numpy ml_dtypes pytest hypothesis scikit-build-core pybind11 cmake ninja
CORE_SOURCES := $(shell find cpp python -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.inl' -o -name '*.py' -o -name '*.pyi' \) 2>/dev/null) CMakeLists.txt pyproject.toml

.PHONY: help demo test test-cpp test-py test-asan test-scalar bench bench-probe examples clean deps typecheck test-interop

help:
	@echo "make demo   - set up, build, run examples/quickstart.py"
	@echo "make test   - set up, build, run the GoogleTest suite (ctest) and the pytest suite"
	@echo "make bench  - side-by-side benchmarks (bench/); BENCH_ARGS=\"--quick --section sdpa\" for a short run"
	@echo "make bench-probe - only the bench's peak probes, the module fattn_probe (bench/probe -> build/probe)"
	@echo "make examples - set up, build, run every examples/*.py (each checks what it shows)"
	@echo "make test-asan - the GoogleTest suite under ASan + UBSan"
	@echo "make test-scalar - the GoogleTest suite with the core built without the vector paths (-DFATTN_SIMD=OFF)"
	@echo "make test-tsan - the threaded GoogleTests under ThreadSanitizer (build/tsan)"
	@echo "make example-cpp - install the C++ core into build/install, build and run examples/cpp against it"
	@echo "make fuzz   - libFuzzer (clang, ASan + UBSan) on the C++ API for FUZZ_SECONDS (default 60)"
	@echo "make typecheck - mypy --strict over the package and tests_py/typecheck_usage.py"
	@echo "make test-interop - the interop tests with PyTorch and transformers installed (torch.ops.fattn, tiny models)"
	@echo "make clean  - remove build/ and .venv/"

# --- set-up ---------------------------------------------------------------------------
$(BUILD)/.deb-deps:
	@mkdir -p $(BUILD)
	@if ! dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then \
	  echo "== installing Debian packages: $(DEB_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	fi
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq python3-venv >/dev/null; \
	fi
	@touch $@

$(VENV)/.py-deps: $(BUILD)/.deb-deps
	@echo "== python environment $(VENV)"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check $(PY_PACKAGES)
	@touch $@

deps: $(VENV)/.py-deps

# The package, built by scikit-build-core into build/py (incremental).
$(VENV)/.fattn-installed: $(VENV)/.py-deps $(CORE_SOURCES)
	@echo "== building and installing fattn"
	@$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps .
	@touch $@

# The C++ core and its GoogleTest suite, without Python.
$(CPP_BUILD)/build.ninja: $(VENV)/.py-deps CMakeLists.txt tests_cpp/CMakeLists.txt
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B $(CPP_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DFATTN_BUILD_TESTS=ON -DFATTN_BUILD_PYTHON=OFF >/dev/null

# --- the commands ------------------------------------------------------------------
demo: $(VENV)/.fattn-installed
	@$(PY) examples/quickstart.py

test-cpp: $(CPP_BUILD)/build.ninja
	@echo "== GoogleTest (ctest)"
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(CPP_BUILD)
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH ctest --test-dir $(CPP_BUILD) --output-on-failure -j2

test-py: $(VENV)/.fattn-installed
	@echo "== pytest"
	@$(PY) -m pytest -q -p no:cacheprovider tests_py

# Both suites run even when the first fails; the exit code is non-zero if either did.
test:
	@status=0; \
	$(MAKE) --no-print-directory test-cpp || status=1; \
	$(MAKE) --no-print-directory test-py || status=1; \
	exit $$status

# Benchmark-only dependencies: PyTorch (its CPU build, from this machine's disk) and matplotlib.
$(VENV)/.bench-deps: $(VENV)/.py-deps
	@$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 matplotlib
	@touch $@

# The GoogleTest suite built with AddressSanitizer + UndefinedBehaviorSanitizer
# (the exhaustive conversion sweeps are skipped: they only repeat arithmetic).
# -O1 -g1 and -j2 keep a cold build near 2.5 minutes on two shared cores.
SANITIZER_FLAGS := -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1"
test-asan: $(VENV)/.py-deps
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B $(BUILD)/asan -G Ninja $(SANITIZER_FLAGS) \
	  -DFATTN_BUILD_TESTS=ON -DFATTN_BUILD_PYTHON=OFF -DFATTN_SANITIZE=address,undefined >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(BUILD)/asan -j2
	@UBSAN_OPTIONS=halt_on_error=1 $(BUILD)/asan/tests_cpp/fattn_tests --gtest_brief=1 \
	  --gtest_filter='-Exp.*Within*:DtypeF16.EveryF32*:DtypeBf16.RoundsToNearestEvenAroundEveryPattern'

# The core as it builds off x86-64: -DFATTN_SIMD=OFF compiles no simd/*.cpp, so
# only the scalar path exists, and no file may include <immintrin.h> (checked
# in the compilers' dependency lists). The GoogleTest suite then runs on it.
SCALAR_BUILD := $(BUILD)/scalar
test-scalar: $(VENV)/.py-deps
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B $(SCALAR_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DFATTN_BUILD_TESTS=ON -DFATTN_BUILD_PYTHON=OFF -DFATTN_SIMD=OFF >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(SCALAR_BUILD) -j2
	@found=$$(PATH=$(CURDIR)/$(VENV)/bin:$$PATH ninja -C $(SCALAR_BUILD) -t deps | awk '/^[^ ]/ {obj = $$1} /immintrin\.h/ {print obj}'); \
	if [ -n "$$found" ]; then echo "== <immintrin.h> included with FATTN_SIMD=OFF by: $$found"; exit 1; fi
	@echo "== GoogleTest (ctest), scalar path only"
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH ctest --test-dir $(SCALAR_BUILD) --output-on-failure -j2

# The bench's peak probes (bench/probe): a pybind11 module of their own, fattn_probe, configured
# with the venv's Python, pybind11, cmake and ninja into build/probe; not part of the library.
PROBE_BUILD := $(BUILD)/probe
bench-probe: $(VENV)/.py-deps
	@[ -f $(PROBE_BUILD)/build.ninja ] || PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S bench/probe -B $(PROBE_BUILD) \
	  -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(CURDIR)/$(PY) \
	  -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(PROBE_BUILD) -j2

# BENCH_ARGS: bench/run.py's options, e.g. "--quick --section sdpa" (default: the full run).
BENCH_ARGS ?=
bench: $(VENV)/.fattn-installed $(VENV)/.bench-deps bench-probe
	@$(PY) bench/run.py $(BENCH_ARGS)

# --- examples ---------------------------------------------------------------------------
# Every examples/*.py except helper modules (_*.py), with matplotlib's file-only backend. All
# of them run; the target fails if any exits non-zero. Figures go to examples/out/.
# transformers_numerics.py needs torch and transformers: installed as for test-interop.
EXAMPLES := $(sort $(filter-out examples/_%,$(wildcard examples/*.py)))

examples: $(VENV)/.fattn-installed $(VENV)/.torch-transformers-deps
	@$(PY) -c 'import matplotlib' 2>/dev/null || \
	  { echo "== installing matplotlib into $(VENV)"; $(PY) -m pip install -q --disable-pip-version-check matplotlib; }
	@failed=""; \
	for f in $(EXAMPLES); do \
	  echo "== $$f"; \
	  MPLBACKEND=Agg $(PY) $$f || failed="$$failed $$f"; \
	done; \
	if [ -n "$$failed" ]; then echo "== examples FAILED:$$failed"; exit 1; fi; \
	echo "== all $(words $(EXAMPLES)) examples passed"

# --- interop and typing ---------------------------------------------------------------
# mypy only for `make typecheck`; the settings (strict, files, mypy_path) live in
# pyproject.toml [tool.mypy]. It checks the sources and the stubs of fattn._core, no build needed.
$(VENV)/.typecheck-deps: $(VENV)/.py-deps
	@$(PY) -m pip install -q --disable-pip-version-check mypy
	@touch $@

typecheck: $(VENV)/.typecheck-deps
	@echo "== mypy --strict"
	@$(PY) -m mypy

# PyTorch is not a dependency of `make test` (about 200 MB installed for a handful of tests;
# the DLPack path is also exercised there with NumPy's own exporter); this target installs it,
# as `make bench` does, with transformers (pinned: fattn.integrations.transformers follows its
# "sdpa" path's conventions), and runs the interop tests with torch tensors, the torch.ops.fattn
# operators and tiny transformers models (tests_py/test_torch_ops.py, test_transformers.py).
$(VENV)/.torch-transformers-deps: $(VENV)/.py-deps
	@$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 transformers==5.25.0
	@touch $@

test-interop: $(VENV)/.fattn-installed $(VENV)/.torch-transformers-deps
	@echo "== pytest (interop, with torch)"
	@$(PY) -m pytest -q -p no:cacheprovider tests_py/test_interop.py tests_py/test_torch_ops.py tests_py/test_transformers.py tests_py/test_distributed.py

clean:
	rm -rf $(BUILD) $(VENV)

# --- hardening: sanitizers, fuzzing, C++ package ---------------------------------------
# Each target builds into its own directory under build/ and leaves the others alone.
FUZZ_SECONDS ?= 60
CLANG_PACKAGES := clang libclang-rt-14-dev
FUZZ_BUILD := $(BUILD)/fuzz
TSAN_BUILD := $(BUILD)/tsan
INSTALL_PREFIX := $(CURDIR)/$(BUILD)/install

.PHONY: test-tsan fuzz example-cpp

# clang 14 with its sanitizer and libFuzzer runtimes (only the fuzz target needs them).
$(BUILD)/.clang-deps: $(BUILD)/.deb-deps
	@if ! dpkg -s $(CLANG_PACKAGES) >/dev/null 2>&1; then \
	  echo "== installing Debian packages: $(CLANG_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(CLANG_PACKAGES) >/dev/null; \
	fi
	@touch $@

# The threaded tests (the pool, the concurrency tests, every kernel at several
# thread counts) under ThreadSanitizer; any report fails the run. The exp
# sweep runs on one thread: nothing for TSan there, and minutes of its time.
TSAN_FILTER := Parallel.*:Concurrency.*:Sdpa.BitIdentical*:Prefill.ThreadCount*:Prefill.TileSkip*:Decode.*:Merge.*:IsaPaths.*:Varlen.*:-IsaPaths.ExpIsTheScalarModelsEverywhere
test-tsan: $(VENV)/.py-deps
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B $(TSAN_BUILD) -G Ninja $(SANITIZER_FLAGS) \
	  -DFATTN_BUILD_TESTS=ON -DFATTN_BUILD_PYTHON=OFF -DFATTN_SANITIZE=thread >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(TSAN_BUILD) -j2
	@TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" $(TSAN_BUILD)/tests_cpp/fattn_tests --gtest_brief=1 \
	  --gtest_filter='$(TSAN_FILTER)' --gtest_repeat=5 --gtest_shuffle

# libFuzzer on the argument validation and the kernels at small sizes
# (tests_cpp/fuzz/fuzz_args.cpp), built with clang and ASan + UBSan into
# build/fuzz, with libstdc++'s assertions (std::optional, vector bounds). No
# length control: the decoder reads zeros past the input's end, so short
# inputs alone would keep every late choice at its default. The committed
# seeds (tests_cpp/fuzz/corpus) are only read; new inputs go to
# build/fuzz/corpus, crashes to build/fuzz/. CI=true fixes the seed and
# starts from the committed seeds alone (an empty scratch corpus).
fuzz: $(BUILD)/.clang-deps $(VENV)/.py-deps
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFATTN_BUILD_FUZZ=ON -DFATTN_BUILD_TESTS=OFF -DFATTN_BUILD_PYTHON=OFF \
	  -DFATTN_SANITIZE=address,undefined \
	  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -D_GLIBCXX_ASSERTIONS" >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(FUZZ_BUILD) -j2 --target fuzz_args
	@if [ "$$CI" = true ]; then rm -rf $(FUZZ_BUILD)/corpus; fi  # CI: the committed seeds only, reproducible
	@mkdir -p $(FUZZ_BUILD)/corpus
	@echo "== fuzzing for $(FUZZ_SECONDS) s (plus one replay of the corpus)"
	@seed=$$( [ "$$CI" = true ] && echo "-seed=1" ); \
	UBSAN_OPTIONS=print_stacktrace=1 $(FUZZ_BUILD)/tests_cpp/fuzz/fuzz_args $(FUZZ_BUILD)/corpus tests_cpp/fuzz/corpus \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=512 -len_control=0 -timeout=10 -rss_limit_mb=2048 $$seed \
	  -artifact_prefix=$(FUZZ_BUILD)/ -print_final_stats=1 2>&1 \
	  | grep -v -E '^(#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|[[:space:]]+NEW_FUNC)'

# The C++ core installed as a CMake package into build/install (configured
# and built in build/pkg), then examples/cpp built against it with
# find_package(fattn) and run.
example-cpp: $(VENV)/.py-deps
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B $(BUILD)/pkg -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DFATTN_BUILD_TESTS=OFF -DFATTN_BUILD_PYTHON=OFF -DFATTN_INSTALL=ON -DCMAKE_INSTALL_PREFIX=$(INSTALL_PREFIX) >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(BUILD)/pkg -j2
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --install $(BUILD)/pkg >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S examples/cpp -B $(BUILD)/example-cpp -G Ninja \
	  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=$(INSTALL_PREFIX) >/dev/null
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build $(BUILD)/example-cpp
	@$(BUILD)/example-cpp/fattn_example
