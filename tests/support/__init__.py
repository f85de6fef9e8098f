"""Helpers shared by the tests (none of them tests): paths, training runs, serving inputs, botocore's models."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
