# Two commands on a fresh machine (see README):
#   make demo   # set up .venv, then run the main job on the embedded default
#   make test   # set up .venv, then run the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch pulls the newest CUDA build (several GB).
# A GPU user installs the CUDA build of torch into $(VENV) first; it is then left as it is.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test bench model clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(PY) -m shared.trial --config configs/sql_micro.yaml

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run

model: setup  # rebuild the embedded micro model (~30 min on 2 cores); the committed one is this build
	$(PY) -m shared.micro --out shared/embedded/micro-llama --threads 2

clean:
	rm -rf artifacts .pytest_cache
