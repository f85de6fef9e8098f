"""The one dataset check (cli/dataset.py's check_layout), as `upload-data` and the demo apply it: classes missing
from a split, symbolic links out of the tree, files named as images that are not, names with control characters,
and a dry run that checks before it needs AWS (issue 12, items 8 and 20)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from botocore.exceptions import NoCredentialsError

from cli.dataset import check_layout, printable
from cli.main import main
from tests.support.cli import BUCKET, Scenario, make_dataset, png_bytes, record


def run(argv: list[str], capsys, factory=None) -> tuple[int, str, str]:
    code = main(argv, backend_factory=factory)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def run_dir(tmp_path) -> Path:
    root = tmp_path / "run"
    record(root, Scenario())
    return root


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    make_dataset(root)
    return root


def _no_credentials(args):
    raise NoCredentialsError()


# --- item 8: a class missing from valid/ or test/ ---------------------------------------------------------------------
@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_class_missing_from_a_split_is_flagged(data, run_dir, capsys, split):
    shutil.rmtree(data / split / "2")
    assert any(f"{split}/ lacks classes that train/ has: 2" in p for p in check_layout(data).problems)
    code, out, err = run(["upload-data", str(data), "--local", str(run_dir)], capsys)
    assert code == 2 and out == "" and f"{split}/ lacks classes that train/ has: 2" in err
    assert not (run_dir / "s3" / BUCKET / "data").exists()


def test_the_demo_applies_the_same_check(data):
    from local.demo import DemoError, _ensure_dataset

    shutil.rmtree(data / "valid" / "1")
    with pytest.raises(DemoError, match="valid/ lacks classes that train/ has: 1"):
        _ensure_dataset(data, console=None)


def test_dry_run_checks_the_layout_before_needing_aws(data, capsys):
    code, out, err = run(["upload-data", str(data), "--dry-run"], capsys, factory=_no_credentials)
    assert code == 0, err
    assert "3 classes, 6 train, 6 valid, 6 test images: the layout is valid" in out
    assert "dry run: the upload was not planned" in out and "credentials" in out.lower()
    shutil.rmtree(data / "test" / "0")
    code, out, err = run(["upload-data", str(data), "--dry-run"], capsys, factory=_no_credentials)
    assert code == 2 and "test/ lacks classes" in err  # the layout, not the credentials


def test_without_dry_run_missing_credentials_are_still_an_error(data, capsys):
    code, _, err = run(["upload-data", str(data)], capsys, factory=_no_credentials)
    assert code == 1 and "credentials" in err.lower() and err.count("\n") == 1


# --- item 20: links out, files that are not images, control characters -----------------------------------------------
def test_symbolic_links_out_of_the_tree_are_refused(data, tmp_path, run_dir, capsys):
    secret = tmp_path / "secret"
    (secret / "inner").mkdir(parents=True)
    (secret / "id_rsa.png").write_bytes(png_bytes())
    (secret / "inner" / "x.png").write_bytes(png_bytes())
    (data / "train" / "0" / "key.png").symlink_to(secret / "id_rsa.png")
    (data / "train" / "3").symlink_to(secret / "inner", target_is_directory=True)
    (data / "train" / "1" / "same.png").symlink_to(data / "train" / "1" / "0.png")  # inside: fine
    layout = check_layout(data)
    assert sorted(p.as_posix() for p in layout.outside) == ["train/0/key.png", "train/3"]
    assert not any("secret" in str(data / f) or f.name == "key.png" for f in layout.files)
    code, _, err = run(["upload-data", str(data), "--local", str(run_dir)], capsys)
    assert code == 2 and "2 symbolic link(s) leading outside" in err
    assert not (run_dir / "s3" / BUCKET / "data").exists()


def test_empty_and_fake_images_are_refused(data, run_dir, capsys):
    (data / "train" / "0" / "empty.jpg").write_bytes(b"")
    (data / "train" / "1" / "notes.jpg").write_text("not a picture at all")
    (data / "valid" / "2" / "cut.png").write_bytes(png_bytes()[:20])
    layout = check_layout(data)
    assert sorted((p.name, why) for p, why in layout.unreadable) == [
        ("cut.png", "not an image"), ("empty.jpg", "empty"), ("notes.jpg", "not an image")]
    code, _, err = run(["upload-data", str(data), "--local", str(run_dir)], capsys)
    assert code == 2 and "3 file(s) named as images that are not" in err and "empty.jpg (empty)" in err
    code, out, err = run(["upload-data", str(data), "--local", str(run_dir), "--ignore-non-images"], capsys)
    assert code == 0, err
    assert "18 to upload" in out and not (run_dir / "s3" / BUCKET / "data" / "train" / "0" / "empty.jpg").exists()


def test_control_characters_in_file_names_are_escaped(data, run_dir, capsys):
    evil = "\x1b]0;owned\x07\x1b[2Jx\n.txt"
    (data / "train" / "0" / evil).write_text("x")
    code, _, err = run(["upload-data", str(data), "--local", str(run_dir)], capsys)
    assert code == 2 and "\x1b" not in err and "\x07" not in err and err.count("\n") == 1
    assert printable(evil) in err and "\\x1b]0;owned\\x07" in err
    assert printable("naïve 猫.png") == "naïve 猫.png"  # only control characters are escaped
