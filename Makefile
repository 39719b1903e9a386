# Two commands do all set-up on a fresh machine: `make chat` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: chat test lint browser install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# llama-cpp-python compiles llama.cpp (about 5 minutes on 2 cores, once; pip caches the wheel)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(VENV)/bin/pip install --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Headless Chromium for the UI tests comes from Debian; Playwright drives it (its own browser download fails here).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

chat: $(STAMP)
	$(VENV)/bin/qa ingest seeds
	$(VENV)/bin/qa ui

test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check qa tests eval
