"""The AWS CDK app: `synth_template()` for tests and local mode, `build_app()` for app.py (`cdk synth`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aws_cdk as cdk

    from infra.config import StackConfig
    from infra.stack import ImageClassifierStack

from infra.packaging import ROOT  # the repository root (one definition, beside the bundles it packs)

CDK_JSON = ROOT / "cdk.json"
BUILD_SUBDIR = ".build"  # inside the cloud assembly: sourcedir.tar.gz and the Lambda bundle, rebuilt each synth
# The CDK CLI always tells the app it runs where to write the cloud assembly; a bare `python app.py` has no CDK_OUTDIR
# (and no cdk.json context: feature flags included) unless someone set it.
CLI_OUTDIR_ENV = "CDK_OUTDIR"
BARE_OUTDIR = "cdk.out"
# jsii runs the CDK's JavaScript in the Node.js that package.json pins (`make setup` installs it; a release jsii
# supports, so no end-of-life banner), wherever the app is synthesized: `npx cdk` (npx puts it first on PATH
# anyway), tests, local mode, the CLI. JSII_NODE is jsii's own variable (jsii/_kernel/providers/process.py);
# a caller's own choice wins.
PINNED_NODE = ROOT / "node_modules" / ".bin" / "node"
if PINNED_NODE.is_file():
    os.environ.setdefault("JSII_NODE", str(PINNED_NODE))


def cdk_json_context() -> dict[str, Any]:
    """The `context` of cdk.json, which the CDK CLI would pass; synthesizing in-process must read it itself."""
    return dict(json.loads(CDK_JSON.read_text()).get("context", {})) if CDK_JSON.is_file() else {}


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None, nag: bool | None = None,
              from_cli: bool = False) -> tuple[cdk.App, ImageClassifierStack]:
    """An App holding the stack. From the CDK CLI, context comes from the CLI (cdk.json merged with -c); run bare
    (`python app.py`), the app reads cdk.json's context itself and writes ./cdk.out, as `cdk synth` would."""
    import aws_cdk as cdk

    from infra.config import load_config
    from infra.stack import ImageClassifierStack

    if from_cli and CLI_OUTDIR_ENV in os.environ:
        app = cdk.App()
    else:
        bare_outdir = BARE_OUTDIR if from_cli else None
        app = cdk.App(outdir=outdir or bare_outdir, context={**cdk_json_context(), **(context or {})})
    cfg = load_config(app.node.get_all_context())
    stack = ImageClassifierStack(app, cfg.stack_name, cfg=cfg, build_dir=Path(app.outdir) / BUILD_SUBDIR)
    if cfg.nag if nag is None else nag:
        from cdk_nag import AwsSolutionsChecks

        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def synth(context: Mapping[str, Any] | None = None, *, outdir: str | Path, nag: bool = False) -> dict[str, Any]:
    """Synthesize into `outdir` (the cloud assembly stays there) and return the stack's template."""
    app, stack = build_app(context, outdir=str(outdir), nag=nag)
    assembly = app.synth()
    return assembly.get_stack_by_name(stack.stack_name).template


def synth_template(context: Mapping[str, Any] | None = None, *, nag: bool = False) -> dict[str, Any]:
    """Synthesize in-process into a temporary directory and return the stack template as a dict.

    `context` overrides cdk.json's context, e.g. {"profile": "local"}. No AWS call is made.
    """
    with tempfile.TemporaryDirectory(prefix="cdk-synth-") as outdir:
        return synth(context, outdir=outdir, nag=nag)


def load_config_for(context: Mapping[str, Any] | None = None) -> StackConfig:
    """The StackConfig `synth_template(context)` would use (cdk.json context + these overrides)."""
    from infra.config import load_config

    return load_config({**cdk_json_context(), **(context or {})})
