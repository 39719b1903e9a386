# Two commands do all set-up on a fresh machine: `make chat` and `make test`. `make check` is the fast lane.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

# llama.cpp is compiled for the instruction sets this machine's CPU lists, never with -march=native and never
# with AMX. A native build on an Intel Xeon with AMX puts the weights in llama.cpp's AMX buffer and dies with
# SIGILL on the first tile instruction (../shared/FACTS.md). AVX-512 is kept where the CPU has it: it evaluates
# prompts 2.0x as fast as an AVX2 build here (README, "Why llama.cpp is built this way"). The flags come from
# /proc/cpuinfo, so a machine of another CPU kind gets its own build (a new wheel folder and a new install
# stamp), and a venv carried to a CPU that lacks its instructions is one clear error at load (qa/generators/native.py).
LLAMA_VERSION := 0.3.36
CPU_FLAGS := $(shell grep -m1 -E '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2)
on = $(if $(strip $(foreach f,$(1),$(if $(filter $(f),$(CPU_FLAGS)),,x))),OFF,ON)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=$(call on,avx) -DGGML_AVX2=$(call on,avx2) -DGGML_FMA=$(call on,fma) \
  -DGGML_F16C=$(call on,f16c) -DGGML_BMI2=$(call on,bmi2) -DGGML_AVX_VNNI=$(call on,avx_vnni) \
  -DGGML_AVX512=$(call on,avx512f avx512cd avx512vl avx512dq avx512bw) -DGGML_AVX512_VBMI=$(call on,avx512vbmi) \
  -DGGML_AVX512_VNNI=$(call on,avx512_vnni) -DGGML_AVX512_BF16=$(call on,avx512_bf16) \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE := -DGGML_NATIVE=OFF
endif
LLAMA_TAG := $(shell echo '$(LLAMA_CMAKE)' | sha1sum | cut -c1-10)
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-8)-$(LLAMA_TAG)
# The wheel is built into a folder named after its flags, so pip's own wheel cache (which ignores CMAKE_ARGS)
# can never hand back a build made with other flags.
WHEELS := $(HOME)/.cache/qa/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_TAG)
LLAMA_WHEEL := $(WHEELS)/.built

.PHONY: chat test check lint browser ocr install

install: $(STAMP)

$(LLAMA_WHEEL):
	test -x $(PY) || python3 -m venv $(VENV)
	# about 5 minutes on 2 cores, once per machine
	mkdir -p $(WHEELS)
	CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE)" $(VENV)/bin/pip wheel --disable-pip-version-check \
	  --no-deps --no-cache-dir --no-binary llama-cpp-python -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(STAMP): pyproject.toml Makefile $(LLAMA_WHEEL)
	test -x $(PY) || python3 -m venv $(VENV)
	# the wheel of this CPU's flags replaces whatever llama-cpp-python the venv had
	$(VENV)/bin/pip install --disable-pip-version-check --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-*.whl
	$(VENV)/bin/pip install --disable-pip-version-check --find-links $(WHEELS) -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Headless Chromium for the UI tests comes from Debian; Playwright drives it (its own browser download fails here).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# Scanned PDF pages are read by Debian's tesseract (pytesseract drives it; setting ocr turns it off).
ocr:
	@command -v tesseract >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq tesseract-ocr >/dev/null; }

chat: $(STAMP) ocr
	$(VENV)/bin/qa ingest seeds
	$(VENV)/bin/qa ui

test: $(STAMP) browser ocr
	$(PY) -m pytest -q -p no:cacheprovider

# The fast lane: every test but those marked slow (the language model, benchmarks, the browser), model (the real
# embedding model) or server (chroma run, llama.cpp's server, qa ui, a browser); the decisions run with the fakes of
# tests/fakes.py. Then ruff and mypy.
check: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not model and not server" -x
	$(VENV)/bin/ruff check qa tests eval
	$(VENV)/bin/mypy  # clean since session 15: keep it so

lint: $(STAMP)
	$(VENV)/bin/ruff check qa tests eval
	$(VENV)/bin/mypy  # qa/, configured in pyproject.toml
