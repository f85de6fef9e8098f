"""The CLI's own settings. What it agrees on with the stack (output keys, execution input keys, SageMaker's artifact
layout, the local account and region) lives in stackfacts; the training contract in ml/contract.py.
"""

from __future__ import annotations

import os

import stackfacts as facts

STACK_ENV = "IMGCLF_STACK"
DEFAULT_STACK_NAME = os.environ.get(STACK_ENV, facts.STACK_NAME)

# --- local runs ------------------------------------------------------------------------------------------------
DEFAULT_LOCAL_DIR = "demo-output"
LOCAL_API_URL = "http://127.0.0.1:8080"  # `make serve` (PORT=8080)
