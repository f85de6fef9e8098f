"""The training container's contract, from the SageMaker training toolkit itself, and the DLC it runs in.

What an entry point sees in a SageMaker framework container is computed by the training toolkit (sagemaker-training,
the same package the PyTorch training DLC installs: deep-learning-containers pytorch/training/docker/2.6/py3/
Dockerfile.cpu): `environment.Environment()` reads /opt/ml/input/config/{hyperparameters,inputdataconfig,
resourceconfig}.json, and the entry point runs as `python -- <sagemaker_program> <env.to_cmd_args()>` with
`env.to_env_vars()` (SM_TRAINING_ENV, SM_HPS, SM_USER_ARGS, SM_HP_*, SM_CHANNEL_*, SM_RESOURCE_CONFIG, ...) in its
environment (sagemaker_training/entry_point.py run, process.py ProcessRunner._create_command). The stand-in does not
copy those rules: it runs that code over the job's directory, the local /opt/ml (SAGEMAKER_BASE_DIR, the toolkit's own
switch for running outside a container), in a child process because the toolkit reads the base directory once, at
import.

Before the entry point, the toolkit pip-installs the source directory's requirements.txt inside the DLC
(entry_point.install -> modules.install_requirements). Locally nothing is installed into the DLC's place; instead
the file is checked against the DLC's Python and the packages it ships (DLCS below, offline), and pip resolves it,
wheels only, for the DLC's CPython and glibc (when the package index answers), so a requirement that would
downgrade one of them, or that has no wheel for the DLC's Python, fails the job in one line before any training.

    python -P local/sagemaker/container.py environment   (SAGEMAKER_BASE_DIR=<job dir>): {"env": ..., "argv": ...}
    python -P local/sagemaker/container.py check-requirements FILE [IMAGE]   (one line per problem, exit 1)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"  # sagemaker_training.environment.BASE_PATH_ENV
REQUIREMENTS_FILE = "requirements.txt"  # sagemaker_training.modules.has_requirements: at the source dir's root


class ContainerError(Exception):
    """The toolkit would fail the job before the entry point runs; the message is one line."""


@dataclass(frozen=True)
class Launch:
    """How the toolkit starts the entry point: environment variables it adds and the script's arguments."""

    env: dict[str, str]
    argv: list[str]
    entry_point: str


def toolkit_launch(job_dir: Path, base_env: dict[str, str], timeout: float = 120.0) -> Launch:
    """The toolkit's Environment over `job_dir` (holding input/config/*.json as SageMaker writes them).

    `base_env` is the container's environment before the toolkit runs (TRAINING_JOB_NAME, the request's
    Environment, ...): the toolkit reads some of it (SAGEMAKER_PROGRAM, SM_HP_MP_PARAMETERS, ...)."""
    env = {**base_env, BASE_DIR_ENV: str(job_dir)}
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):  # the toolkit asks boto3 for a region: no user profile
        env.pop(name, None)                              # exists in a container (a missing one would raise)
    # This file as a script (-P: its folder stays off sys.path), so the child imports the toolkit and nothing of
    # the stand-in's package.
    result = subprocess.run([sys.executable, "-P", str(Path(__file__).resolve()), "environment"], env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ContainerError(lines[-1] if lines else f"the training toolkit exited with status {result.returncode}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return Launch(data["env"], data["argv"], data["entry_point"])


def _print_environment() -> int:
    """Child: the toolkit's env vars and argv for the job in SAGEMAKER_BASE_DIR, as JSON on stdout."""
    import logging

    logging.disable(logging.INFO)  # the toolkit logs its probes (nvidia-smi, neuron-ls) at INFO
    from sagemaker_training import environment, errors, process

    try:
        env = environment.Environment()
        entry_point = process.validate_entry_point(env.user_entry_point)  # the toolkit's check, before install
    except errors.ClientError as exc:
        print(f"ClientError: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except Exception as exc:  # a config file the toolkit cannot read: one line, as the job's FailureReason
        print(f"ClientError: the training toolkit cannot read the container configuration: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps({"env": env.to_env_vars(), "argv": env.to_cmd_args(), "entry_point": entry_point}))
    return 0


# --- the DLC ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dlc:
    """What a Deep Learning Container image ships, as far as a requirements file can collide with it."""

    name: str
    python: str  # the interpreter's full version
    preinstalled: dict[str, str]  # distribution -> the versions the image holds (a specifier)
    source: str


# The SageMaker PyTorch training DLC 2.6 (CPU and GPU, py312), checked 2026-11-30 in aws/deep-learning-containers:
# pytorch/training/docker/2.6/py3/Dockerfile.cpu and cu126/Dockerfile.gpu (PYTHON_VERSION=3.12.8, the torch/
# torchvision/torchaudio wheels, "numpy<2" for fastai, sagemaker>=2,<3, sagemaker-training), the image's
# Dockerfile.sagemaker.cpu.core_packages.json (the same torch pins), and sagemaker-training 5.x's setup.py
# (protobuf>=5.28.1). Pillow, scipy and pandas come from conda-forge unpinned: a requirement on them is never
# reported as a conflict.
PYTORCH_TRAINING_2_6 = Dlc(
    name="PyTorch training DLC 2.6 (py312)",
    python="3.12.8",
    preinstalled={"torch": "==2.6.0", "torchvision": "==0.21.0", "torchaudio": "==2.6.0", "numpy": "<2",
                  "protobuf": ">=5.28.1", "sagemaker": ">=2,<3", "sagemaker-training": ">=5"},
    source="aws/deep-learning-containers pytorch/training/docker/2.6/py3/Dockerfile.cpu",
)
DLCS: dict[tuple[str, str], Dlc] = {("2.6", "py312"): PYTORCH_TRAINING_2_6}
# The image URIs sagemaker.core.image_uris gives: <account>.dkr.ecr.<region>.amazonaws.com/pytorch-training:<tag>,
# tags like 2.6.0-gpu-py312 or 2.6.0-cpu-py312-ubuntu22.04-sagemaker.
TRAINING_IMAGE = re.compile(r"/pytorch-training:(\d+\.\d+)(?:\.\d+)?-(?:cpu|gpu)-(py\d+)\b")


def dlc_for_image(image: str) -> Dlc | None:
    """The DLC an image URI names, when this module knows what it ships."""
    match = TRAINING_IMAGE.search(image or "")
    return DLCS.get((match.group(1), match.group(2))) if match else None


def _probes(*specifiers: SpecifierSet) -> list[Version]:
    """Versions that sit on, just above, below and far from every bound of the specifiers: if two specifier sets
    (of the comparison operators requirements use) share any version, they share one of these."""
    probes = {Version("0"), Version("999999")}
    for specifier_set in specifiers:
        for spec in specifier_set:
            try:
                bound = Version(spec.version.removesuffix(".*"))
            except InvalidVersion:
                continue
            release = list(bound.release)
            probes.update({bound, Version(".".join(map(str, [*release, 0, 0, 1])))})
            if release[-1] > 0:
                probes.add(Version(".".join(map(str, [*release[:-1], release[-1] - 1, 999999]))))
            elif len(release) > 1 and release[-2] > 0:
                probes.add(Version(".".join(map(str, [*release[:-2], release[-2] - 1, 999999]))))
    return sorted(probes)


def _disjoint(wanted: SpecifierSet, held: SpecifierSet) -> bool:
    return not any(wanted.contains(v, prereleases=True) and held.contains(v, prereleases=True)
                   for v in _probes(wanted, held))


def _markers(dlc: Dlc) -> dict[str, str]:
    # The DLC's interpreter: Linux x86_64 CPython at dlc.python.
    env: dict[str, str] = dict(default_environment())  # type: ignore[arg-type]  # packaging's TypedDict of str
    version = Version(dlc.python)
    env.update({"python_version": f"{version.major}.{version.minor}", "python_full_version": dlc.python,
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "implementation_version": dlc.python, "sys_platform": "linux", "platform_system": "Linux",
                "os_name": "posix", "platform_machine": "x86_64"})
    return env


def check_requirements(path: Path, dlc: Dlc) -> list[str]:
    """What `pip install -r path` inside the DLC would break: one line per problem (empty: nothing)."""
    problems = []
    markers = _markers(dlc)
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{number}"
        if line.startswith("-"):
            problems.append(f"{where}: pip option {line.split()[0]!r} is not checked locally: list requirements only")
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            problems.append(f"{where}: pip cannot parse {line!r}: {exc}")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(markers):
            continue  # pip skips it on the DLC's Python
        name = canonicalize_name(requirement.name)
        held = dlc.preinstalled.get(name)
        if held is None or not requirement.specifier:
            continue
        held_set = SpecifierSet(held)
        if _disjoint(requirement.specifier, held_set):
            probes = _probes(held_set, requirement.specifier)
            held_versions = [v for v in probes if held_set.contains(v, prereleases=True)]
            wanted = [v for v in probes if requirement.specifier.contains(v, prereleases=True)]
            how = "replace"
            if held_versions and wanted and max(wanted) < min(held_versions):
                how = "downgrade"
            elif held_versions and wanted and min(wanted) > max(held_versions):
                how = "upgrade"
            problems.append(f"{where}: {line} would {how} the {dlc.name}'s preinstalled {name} ({held})")
    return problems


# The DLC's OS (FROM ubuntu:22.04 in the Dockerfile) has glibc 2.35: pip there takes manylinux wheels up to
# manylinux_2_35 (PEP 600), and the legacy aliases of the older ones (PEP 513, 571, 599).
DLC_GLIBC = (2, 35)
NO_DISTRIBUTION = re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)")


def _platforms() -> list[str]:
    legacy = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    return legacy + [f"manylinux_2_{minor}_x86_64" for minor in range(5, DLC_GLIBC[1] + 1)]


def wheel_problems(path: Path, dlc: Dlc, timeout: float = 120.0) -> list[str] | None:
    """Resolve the file as pip would inside the DLC, wheels only (pip's own resolver against the package index,
    for the DLC's CPython and glibc): a package that has no wheel there would be built from source in the job, or
    fail to. Empty: every requirement has wheels; None: the index could not be asked (nothing is concluded)."""
    version = Version(dlc.python)
    tag = f"{version.major}{version.minor}"
    common = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet"]
    try:
        with tempfile.TemporaryDirectory() as target:  # a dry run installs nothing; pip wants a target anyway
            result = subprocess.run(
                [*common, "install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--target", target,
                 "--python-version", f"{version.major}.{version.minor}", "--implementation", "cp", "--abi",
                 f"cp{tag}", *[arg for p in _platforms() for arg in ("--platform", p)], "-r", str(path)],
                capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode == 0:
        return []
    missing = NO_DISTRIBUTION.search(result.stderr)
    if missing is None:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
        return [f"{path.name}: pip cannot resolve it for the {dlc.name}: {errors[-1] if errors else 'failed'}"]
    name = missing.group(1)
    try:  # does the index know the package at all (else the index is unreachable, or the name is wrong)?
        known = subprocess.run([*common, "index", "versions", name], capture_output=True, text=True,
                               timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not known:
        return None
    return [f"{path.name}: {name} has no wheel for CPython {version.major}.{version.minor} on the {dlc.name}'s "
            f"manylinux x86_64: pip would compile it from source in every job"]


def requirements_failure(code_dir: Path, image: str, wheels: bool = True,
                         log: Callable[[str], None] | None = None) -> str | None:
    """The one-line FailureReason when the source dir's requirements.txt cannot go into the job's DLC, else None.
    `wheels`: also ask the package index (pip) whether every requirement has a wheel for the DLC's Python."""
    path = code_dir / REQUIREMENTS_FILE
    dlc = dlc_for_image(image)
    if not path.is_file() or dlc is None:
        return None
    problems = check_requirements(path, dlc)
    if not problems and wheels:
        found = wheel_problems(path, dlc)
        if found is None and log is not None:
            log(f"{path.name}: wheels for the {dlc.name} not checked: the package index did not answer")
        problems = found or []
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (f"ClientError: the training toolkit runs `pip install -r {REQUIREMENTS_FILE}` in the {dlc.name} "
            f"({dlc.source}): {problems[0]}{more}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["environment"]:
        return _print_environment()
    if args[:1] == ["check-requirements"] and len(args) in (2, 3):
        dlc = dlc_for_image(args[2]) if len(args) == 3 else PYTORCH_TRAINING_2_6
        if dlc is None:
            print(f"error: no DLC facts for image {args[2]}", file=sys.stderr)
            return 2
        problems = check_requirements(Path(args[1]), dlc) or wheel_problems(Path(args[1]), dlc) or []
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    print("usage: python -P local/sagemaker/container.py environment | check-requirements FILE [IMAGE]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
