# StyGig: two commands for a fresh clone — `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= build/demo
PORT ?= 8080

KAGGLE_LIMIT ?= 3000
# Where pip finds the CPU build of torch (torch==2.13.0+cpu, which PyPI does not host): a local
# wheel folder in pip's find-links, or PyTorch's CPU index, e.g.
# make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: demo demo-kaggle test test-fast lint typecheck unit setup clean sample browser

# Every version from the lock file (requirements/lock.txt), as the Docker images install them.
$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements/lock.txt pip
	# torch first, pinned to the CPU build (TORCH_INDEX above); a newer torch would pull CUDA.
	$(BIN)/pip install --quiet -c requirements/lock.txt $(TORCH_FROM) torch==2.13.0
	$(BIN)/pip install --quiet -c requirements/lock.txt -e ".[torch,plot,serve,aws,parquet,web,ray,dev]"
	touch $(STAMP)

setup: $(STAMP)

sample: $(STAMP)
	$(BIN)/stygig sample-catalog --out $(DEMO_DIR)/catalog

demo: $(STAMP)
	$(BIN)/stygig sample-catalog --out $(DEMO_DIR)/catalog
	$(BIN)/stygig build --catalog $(DEMO_DIR)/catalog/catalog.csv --images $(DEMO_DIR)/catalog \
		--encoder efficientnet-lite0 --out $(DEMO_DIR)/artifact
	$(BIN)/stygig inspect $(DEMO_DIR)/artifact
	$(BIN)/stygig recommend --artifact $(DEMO_DIR)/artifact $(DEMO_DIR)/catalog/queries/grey-shirt.jpg
	@echo "Serving the web page and API on http://127.0.0.1:$(PORT) (Ctrl-C to stop)"
	$(BIN)/stygig serve --artifact $(DEMO_DIR)/artifact --host 127.0.0.1 --port $(PORT) \
		--examples $(DEMO_DIR)/catalog/queries

# The demo on real product photos: KAGGLE is the unpacked Kaggle "Fashion Product Images" download.
demo-kaggle: $(STAMP)
	@test -n "$(KAGGLE)" || { echo "usage: make demo-kaggle KAGGLE=path/to/the/unpacked/download"; exit 2; }
	$(BIN)/stygig sample-catalog --from-kaggle "$(KAGGLE)" --limit $(KAGGLE_LIMIT) --out $(DEMO_DIR)-kaggle/catalog
	$(BIN)/stygig build --catalog $(DEMO_DIR)-kaggle/catalog/catalog.csv --encoder efficientnet-lite0 \
		--out $(DEMO_DIR)-kaggle/artifact
	$(BIN)/stygig pick-examples --artifact $(DEMO_DIR)-kaggle/artifact --catalog-dir $(DEMO_DIR)-kaggle/catalog
	@echo "Serving the web page and API on http://127.0.0.1:$(PORT) (Ctrl-C to stop)"
	$(BIN)/stygig serve --artifact $(DEMO_DIR)-kaggle/artifact --host 127.0.0.1 --port $(PORT) \
		--examples $(DEMO_DIR)-kaggle/catalog/queries

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian's chromium + driver for the page's end-to-end test (never a browser download).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
	  echo "chromium/chromedriver could not be installed: the browser tests will be skipped"

# Python's bytecode caches are kept for the tests (git ignores them) even where the environment
# says PYTHONDONTWRITEBYTECODE: without them pytest compiles and rewrites every test module and
# plugin again on each run (collecting the unit tests: 11 s instead of 5).
PYTEST = env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

unit: $(STAMP) browser
	$(PYTEST) -q

test: lint typecheck unit

# The quick loop while editing: unit tests only, no servers, no shared datasets, none marked slow
# (about a second or more each: ONNX exports, model training, memory measurements in
# subprocesses, CLI subprocesses; make test runs them).
test-fast: $(STAMP)
	$(PYTEST) -q tests/unit -m "not slow and not shared_data"

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
