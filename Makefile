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
# jsii (under aws-cdk-lib) prints a banner on Node 20, which still runs it correctly; Node >= 22 needs no silencing.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: setup test lint data train serve demo bench synth clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .  # the imgclf CLI
	@touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

data: setup $(DATA)/train

$(DATA)/train:
	$(PY) -m local.digits $(DATA)

# Train by hand on the local digits, exactly as SageMaker would run the script (SM_* variables set).
train: data
	SM_CHANNEL_TRAIN=$(DATA)/train SM_CHANNEL_VALID=$(DATA)/valid SM_CHANNEL_TEST=$(DATA)/test \
	SM_MODEL_DIR=$(MODEL) SM_OUTPUT_DATA_DIR=build/output SM_OUTPUT_DIR=build \
	$(PY) ml/train.py --preset local --checkpoint-dir build/checkpoints $(ARGS)

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

synth: setup
	npx cdk synth --quiet

bench: data
	$(PY) bench/train_bench.py

clean:
	rm -rf build cdk.out $(OUT)
