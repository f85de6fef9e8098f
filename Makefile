# Two commands do everything on a fresh clone: `make demo` (the main job) and `make test`.
# Both run `make setup` first, which is idempotent: it (re)installs only when a pin file changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data/digits
OUT ?= demo-output
MODEL ?= build/model
PORT ?= 8080
SMDEBUG_VENV := .venv-smdebug
SMDEBUG_PY := $(SMDEBUG_VENV)/bin/python
UV := $(VENV)/bin/uv

.PHONY: setup test typecheck fuzz lint lock audit data train serve demo load bench bench-scale bench-setup synth clean

setup: $(VENV)/.installed $(SMDEBUG_VENV)/.installed node_modules/.installed

# pip installs torch/torchvision (and uv) from wherever this machine's pip configuration finds them; uv then makes
# the environment exactly the lock (it keeps what already matches, so torch is not installed twice).
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch torchvision uv
	$(UV) pip sync --quiet --python $(PY) constraints.txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .  # the imgclf CLI
	@touch $@

# smdebug's own environment (it pins protobuf<=3.20.3 and numpy<2.3): what ml/debugger-requirements.txt puts in the training
# container, layered over the main environment's packages (torch) as the toolkit layers it over the DLC's.
$(SMDEBUG_VENV)/.installed: ml/debugger-requirements.txt constraints-smdebug.txt $(VENV)/.installed
	@test -x $(SMDEBUG_PY) || $(PYTHON) -m venv --without-pip $(SMDEBUG_VENV)
	$(UV) pip sync --quiet --python $(SMDEBUG_PY) constraints-smdebug.txt
	$(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > \
		"$$($(SMDEBUG_PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_main_env.pth"
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

# Regenerate both locks from the direct pins (uv records why each package is there).
lock: $(VENV)/.installed
	$(UV) pip compile --quiet --python-version 3.11 --annotation-style line --custom-compile-command "make lock" \
		--excludes excludes.txt requirements.txt -o constraints.txt
	$(UV) pip compile --quiet --python-version 3.11 --annotation-style line --custom-compile-command "make lock" \
		ml/debugger-requirements.txt -o constraints-smdebug.txt

# Known vulnerabilities in both locks (pip-audit in a tool environment of its own); skips when offline.
audit: $(VENV)/.installed
	$(PY) .ci/audit.py

test: setup
	$(PY) -m ruff check .
	$(MAKE) --no-print-directory typecheck
	$(PY) .ci/audit.py
	$(PY) -m pytest

# The property tests with fresh random examples (make test runs a fixed set); add what fails as an @example.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q $$(find tests -name test_properties.py)

lint: setup
	$(PY) -m ruff check .

# Types (mypy 2): every package pyproject.toml's [tool.mypy] lists.
typecheck: setup
	$(PY) -m mypy

data: setup $(DATA)/train

$(DATA)/train:
	$(PY) -m local.digits $(DATA)

# Train by hand on the local digits, exactly as SageMaker would run the script (SM_* variables set).
train: data
	SM_CHANNEL_TRAIN=$(DATA)/train SM_CHANNEL_VALID=$(DATA)/valid SM_CHANNEL_TEST=$(DATA)/test \
	SM_MODEL_DIR=$(MODEL) SM_OUTPUT_DATA_DIR=build/output SM_OUTPUT_DIR=build \
	$(PY) -m ml.train --preset local --checkpoint-dir build/checkpoints $(ARGS)

# A local REST API (API Gateway -> Lambda -> endpoint, all on 127.0.0.1) around a trained model.
serve: setup
	@$(PY) -m local.serve $(MODEL) --port $(PORT) || { rc=$$?; [ $$rc -eq 130 ] || exit $$rc; }

# The synthesized state machine, run end to end on this machine (no AWS account needed). Only the default DATA is
# rendered (`data`); any other DATA must exist. Ctrl-C is a normal way to stop (SERVE=1 serves until then): the demo
# says so in one line and make adds no "Error 130" of its own. KEEP=N keeps the job files of the newest N runs.
# TEMPLATE=cdk.out/ImageClassifier.template.json runs that synthesized template (`make synth`) instead.
KEEP ?= 3
demo: setup $(if $(filter $(DATA),data/digits),data,)
	@$(PY) -m local.demo --out $(OUT) --data $(DATA) --keep-runs $(KEEP) $(if $(SERVE),--serve --port $(PORT),) \
		$(if $(TEMPLATE),--template $(TEMPLATE),) $(ARGS) || { rc=$$?; [ $$rc -eq 130 ] || exit $$rc; }

# While `make demo SERVE=1` serves (another terminal): a bounded rising-then-falling load on its API, one line every
# 10 s with the endpoint's instances (in service/desired), p50 and p99. STEPS=RPS:SECONDS,... changes the load.
IMAGE ?= $(firstword $(wildcard $(DATA)/test/*/*.png))
load: setup
	@$(PY) -m cli load --local $(OUT) --image $(IMAGE) $(if $(STEPS),--steps $(STEPS),) \
		|| { rc=$$?; [ $$rc -eq 130 ] || exit $$rc; }

synth: setup
	npx cdk synth --quiet

bench: data
	$(PY) bench/train_bench.py

# Local endpoint autoscaling under a rising then falling load (a few minutes; loopback only).
bench-scale: setup
	$(PY) bench/scale_bench.py $(ARGS)

# Fresh checkouts of an older commit (BASE, default b77cee3) and HEAD: packages and `make setup` time, side by side.
bench-setup: setup
	$(PY) bench/setup_bench.py $(if $(BASE),--baseline $(BASE),) $(ARGS)

clean:
	rm -rf build cdk.out $(OUT)
