"""Code assets built at synth time: reproducible bytes, the right files, the right asset kinds."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile

from infra import packaging
from ml import contract


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_sourcedir_is_reproducible_and_flat(tmp_path):
    a = packaging.build_sourcedir(tmp_path / "a").read_bytes()
    b = packaging.build_sourcedir(tmp_path / "b").read_bytes()
    assert a == b
    members = _members(a)
    assert contract.TRAINING_PROGRAM in members and "contract.py" in members
    # smdebug's pins ship under another name: the training toolkit pip-installs a root requirements.txt in every
    # job (tuning trials included); train.py installs this file only in the job that has Debugger.
    assert contract.DEBUGGER_REQUIREMENTS in members and "requirements.txt" not in members
    assert {m for m in members if "/" in m} == set()  # train.py imports its modules flat
    assert {m.mtime for m in members.values()} == {packaging.FIXED_MTIME}
    assert {(m.uid, m.gid, m.uname, m.gname, m.mode) for m in members.values()} == {(0, 0, "", "", 0o644)}
    assert list(members) == sorted(members)
    assert a[4:8] == b"\0\0\0\0"  # gzip header without a timestamp
    assert gzip.decompress(a)  # a gzip, as the training toolkit expects


def test_sourcedir_changes_only_with_the_code(tmp_path):
    ml = tmp_path / "ml"
    shutil.copytree(packaging.ML_DIR, ml, ignore=shutil.ignore_patterns("__pycache__"))
    before = packaging.tarball_bytes(packaging.training_sources(ml), ml)
    (ml / "train.py").touch()  # a new mtime alone changes nothing
    assert packaging.tarball_bytes(packaging.training_sources(ml), ml) == before
    (ml / "train.py").write_text((ml / "train.py").read_text() + "\n# changed\n")
    assert packaging.tarball_bytes(packaging.training_sources(ml), ml) != before


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
