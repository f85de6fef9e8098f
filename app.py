#!/usr/bin/env python3
"""`cdk synth` / `cdk deploy` entry point; everything lives in infra/ (configuration: cdk.json context)."""

from infra import build_app

app, _ = build_app(from_cli=True)
app.synth()
