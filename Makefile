# Two commands do all set-up on a fresh machine: `make chat` and `make test`. `make check` is the fast lane.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

# llama.cpp is compiled once, for a CPU level every x86-64 machine we run on has (x86-64-v3: AVX2, FMA, F16C,
# BMI2), not with -march=native. A native build on an Intel Xeon with AMX puts the weights in llama.cpp's AMX
# buffer and dies with SIGILL on the first tile instruction (../shared/FACTS.md); a native build on an AVX-512
# machine would die the same way on an AVX2-only one if the wheel or venv were reused. AVX-512 and AMX stay off;
# the speed this costs is measured in the README ("Why llama.cpp is built for AVX2").
LLAMA_VERSION := 0.3.36
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE := -DGGML_NATIVE=OFF
endif
# The wheel is built into a folder named after its flags, so pip's own wheel cache (which ignores CMAKE_ARGS)
# can never hand back a build made with other flags.
WHEELS := $(HOME)/.cache/qa/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE)' | sha1sum | cut -c1-10)
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
	$(VENV)/bin/pip install --disable-pip-version-check --find-links $(WHEELS) --only-binary llama-cpp-python \
	  "llama-cpp-python[server]==$(LLAMA_VERSION)"
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
# tests/fakes.py.
check: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not model and not server" -x
	$(VENV)/bin/ruff check qa tests eval

lint: $(STAMP)
	$(VENV)/bin/ruff check qa tests eval
	$(VENV)/bin/mypy  # qa/, configured in pyproject.toml
