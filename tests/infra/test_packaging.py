"""Code assets built at synth time: reproducible bytes, the right files, the right asset kinds."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from infra import packaging
from ml import contract


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_sourcedir_is_reproducible_and_one_package(tmp_path):
    a = packaging.build_sourcedir(tmp_path / "a").read_bytes()
    b = packaging.build_sourcedir(tmp_path / "b").read_bytes()
    assert a == b
    members = _members(a)
    # The entry shim at the root, the `ml` package (the same modules the host imports as ml.*) under ml/.
    assert contract.TRAINING_PROGRAM in members and "ml/__init__.py" in members and "ml/contract.py" in members
    assert {m for m in members if "/" not in m} == {contract.TRAINING_PROGRAM}
    assert {m.split("/")[0] for m in members if "/" in m} == {contract.PACKAGE}
    # What train.py copies into every model's code/ (save_model) is in the bundle it runs from.
    needed = {f"ml/{m}" for m in contract.INFERENCE_MODULES} | {f"ml/entry/{contract.INFERENCE_PROGRAM}"}
    assert needed <= set(members), needed - set(members)
    # smdebug's pins ship under another name: the training toolkit pip-installs a root requirements.txt in every
    # job (tuning trials included); train.py installs this file only in the job that has Debugger.
    assert f"ml/{contract.DEBUGGER_REQUIREMENTS}" in members and "requirements.txt" not in members
    assert {m.mtime for m in members.values()} == {packaging.FIXED_MTIME}
    assert {(m.uid, m.gid, m.uname, m.gname, m.mode) for m in members.values()} == {(0, 0, "", "", 0o644)}
    assert list(members) == sorted(members)
    assert a[4:8] == b"\0\0\0\0"  # gzip header without a timestamp
    assert gzip.decompress(a)  # a gzip, as the training toolkit expects


def test_sourcedir_changes_only_with_the_code(tmp_path):
    ml = tmp_path / "ml"
    shutil.copytree(packaging.ML_DIR, ml, ignore=shutil.ignore_patterns("__pycache__"))
    before = packaging.tarball_bytes(packaging.training_sources(ml))
    (ml / "train.py").touch()  # a new mtime alone changes nothing
    assert packaging.tarball_bytes(packaging.training_sources(ml)) == before
    (ml / "train.py").write_text((ml / "train.py").read_text() + "\n# changed\n")
    assert packaging.tarball_bytes(packaging.training_sources(ml)) != before


def test_the_bundle_runs_its_own_ml_package(tmp_path):
    """As the training toolkit runs it: `python train.py ...` from the extracted bundle's root. The code that runs
    is the bundle's `ml` package, not the host's (an editable install would otherwise shadow it)."""
    with tarfile.open(packaging.build_sourcedir(tmp_path / "build"), "r:gz") as tar:
        tar.extractall(tmp_path / "bundle", filter="data")
    bundle = tmp_path / "bundle"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    usage = subprocess.run([sys.executable, contract.TRAINING_PROGRAM, "--help"], cwd=bundle, env=env,
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "--batch-size" in usage.stdout, usage.stderr[-2000:]
    where = subprocess.run([sys.executable, "-c", "import ml.train, ml.contract; print(ml.train.__file__); "
                            "print(ml.contract.__file__)"], cwd=bundle, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(f).resolve().is_relative_to(bundle.resolve()) for f in where.stdout.split())


def test_forwarder_bundle_is_lambda_plus_contract(tmp_path):
    bundle = packaging.build_forwarder(tmp_path)
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    lambda_files = sorted(p.name for p in packaging.LAMBDA_DIR.glob("*.py"))
    assert files == sorted([*lambda_files, "ml/__init__.py", "ml/contract.py"])
    assert (bundle / "ml" / "contract.py").read_bytes() == (packaging.ML_DIR / "contract.py").read_bytes()
    (bundle / "stale.py").write_text("")
    assert not (packaging.build_forwarder(tmp_path) / "stale.py").exists()


def test_assets_in_the_cloud_assembly(cloud, local):
    manifest = (cloud.outdir / "ImageClassifier.assets.json").read_text()
    import json

    files = json.loads(manifest)["files"]
    kinds = {v["source"]["path"]: v["source"].get("packaging", "file") for v in files.values()}
    tarballs = [p for p, k in kinds.items() if p.endswith(".tar.gz")]
    assert len(tarballs) == 1 and kinds[tarballs[0]] == "file"  # uploaded as is, not zipped
    assert all(k == "zip" for p, k in kinds.items() if not p.endswith((".tar.gz", ".json")))
    staged = cloud.outdir / tarballs[0]
    assert "train.py" in _members(staged.read_bytes())
    # Same code, same asset hash, whichever configuration synthesized it.
    local_files = json.loads((local.outdir / "ImageClassifier.assets.json").read_text())["files"]
    assert {k for k in files if files[k]["source"]["path"].endswith(".tar.gz")} == {
        k for k in local_files if local_files[k]["source"]["path"].endswith(".tar.gz")}


def test_training_jobs_point_at_the_sourcedir_asset(cloud):
    import json

    files = json.loads((cloud.outdir / "ImageClassifier.assets.json").read_text())["files"]
    (asset_hash,) = [h for h, f in files.items() if f["source"]["path"].endswith(".tar.gz")]
    subs = cloud.state_machine["Properties"]["DefinitionSubstitutions"]
    assert asset_hash in subs["SourceDirUri"]["Fn::Sub"]
    static = cloud.task_states()["Tune hyperparameters"]["Parameters"]["TrainingJobDefinition"]["StaticHyperParameters"]
    assert asset_hash in static["sagemaker_submit_directory"]
    # A redeploy during a running execution must not revoke the bundle that execution still names: the role reads
    # the app's whole asset prefix, where every bundle this app uploads lands.
    from infra.stack import asset_prefix

    prefix = asset_prefix(cloud.config)
    assert all(d["objectKey"].startswith(prefix) for d in files[asset_hash]["destinations"].values())
    assert f"/{prefix}{asset_hash}" in subs["SourceDirUri"]["Fn::Sub"]
    readable = [s for p in cloud.resources("AWS::IAM::Policy").values()
                for s in p["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "ReadTrainingSource"]
    (resource,) = readable
    assert resource["Action"] == "s3:GetObject"
    assert resource["Resource"]["Fn::Join"][1][-1] == f"/{prefix}*" and asset_hash not in json.dumps(resource)
