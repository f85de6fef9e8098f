"""Transfer learning on an ImageFolder dataset, under SageMaker's training-container contract.

One entry point for tuning trials and the final (Debugger-enabled) training job. SageMaker runs
    python train.py --batch-size 256 --lr 0.0031 --epochs 3 ...
with the data in SM_CHANNEL_TRAIN / SM_CHANNEL_VALID / SM_CHANNEL_TEST (one sub-folder per class) and
writes SM_MODEL_DIR to model.tar.gz. Run by hand with those variables (or the matching flags) set, it
behaves the same. `--preset local` picks the defaults for a CPU without downloads.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import json
import logging
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from ml import contract
from ml.contract import ApiException
from ml.debugger import create_hook, install_smdebug_if_needed
from ml.health import HealthMonitor
from ml.imaging import AUGMENTATIONS, TransformSettings, build_transforms, decode_image
from ml.model import FINETUNE_MODES, ModelError, build_model, staged_weights, train_mode

HERE = Path(__file__).resolve().parent
log = logging.getLogger("train")
PRESETS = {"cloud": contract.CLOUD_HYPERPARAMETERS, "local": contract.LOCAL_HYPERPARAMETERS}
CACHE_BUDGET_BYTES = 256 * 1024 * 1024  # datasets whose files add up to less are decoded once, kept in memory
AMP_MODES = ("auto", "off", "fp16", "bf16")
MAX_LOADER_WORKERS = 16
HEALTH_GRAD_INTERVAL = 5  # bench/train_bench.py: every step costs ~3 % of a CPU step, every 5th well under 1 %
INFERENCE_REQUIREMENTS = (
    "# Serving needs nothing beyond the PyTorch inference container (torch, torchvision, Pillow, numpy).\n"
)


class DataError(Exception):
    """Something about the input data the user has to fix."""


# --- arguments ---------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # A bad hyperparameter is a job failure SageMaker should show, not only a usage line.
        write_failure(f"invalid hyperparameter: {message}")
        super().error(message)


def _env_path(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="cloud")
    preset = pre.parse_known_args(argv)[0].preset
    d = PRESETS[preset]

    p = _Parser(description=__doc__.split("\n\n")[0], parents=[pre])
    hp = p.add_argument_group("hyperparameters (tuned)")
    hp.add_argument(f"--{contract.BATCH_SIZE}", dest="batch_size", type=int, default=int(d[contract.BATCH_SIZE]))
    hp.add_argument(f"--{contract.LR}", dest="lr", type=float, default=float(d[contract.LR]))
    hp.add_argument(f"--{contract.EPOCHS}", dest="epochs", type=int, default=int(d[contract.EPOCHS]))
    st = p.add_argument_group("hyperparameters (static)")
    st.add_argument("--backbone", default=d["backbone"], help="any torchvision classification model")
    st.add_argument("--weights", default=d["weights"],
                    help=f"'{contract.PRETRAINED_WEIGHTS}' (the state dict staged in the "
                         f"'{contract.PRETRAINED_CHANNEL}' input channel; nothing is downloaded), 'none', "
                         f"or a state-dict file")
    st.add_argument("--finetune", choices=FINETUNE_MODES, default=d["finetune"],
                    help="train the new head only, the head and the last block, or everything")
    st.add_argument("--image-size", type=int, default=int(d["image-size"]))
    st.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                    help="training augmentation (default: flip-crop, or crop for images under 64 px)")
    st.add_argument("--weight-decay", type=float, default=1e-4)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--bn-recalibration-batches", type=int, default=8,
                    help="batches that re-estimate trainable batch-norm statistics after each epoch (0: off)")
    st.add_argument("--num-workers", type=int, default=-1, help="data loader workers (-1: automatic)")
    st.add_argument("--health-grad-interval", type=int, default=HEALTH_GRAD_INTERVAL,
                    help="steps between the health checks' gradient statistics (the loss is recorded every step)")
    st.add_argument("--nproc", type=int, default=0,
                    help="data-parallel processes per host (0: one per GPU, else 1)")
    st.add_argument("--debugger", choices=("on", "off"), default="on",
                    help="register the smdebug hook when a hook config exists")
    st.add_argument("--amp", choices=AMP_MODES, default="auto",
                    help="mixed precision on CUDA: auto = bf16 where the GPU computes it natively (Ampere and "
                         "newer), else fp16 with a gradient scaler (T4); off = fp32. CPUs train in fp32 unless "
                         "bf16 is asked for")
    io = p.add_argument_group("locations (SageMaker sets the SM_* variables)")
    for channel in contract.CHANNELS:
        io.add_argument(f"--{channel}", default=_env_path(f"SM_CHANNEL_{channel.upper()}", None))
    io.add_argument("--model-dir", default=_env_path("SM_MODEL_DIR", contract.DEFAULT_MODEL_DIR))
    io.add_argument("--output-data-dir", default=_env_path("SM_OUTPUT_DATA_DIR", contract.DEFAULT_OUTPUT_DATA_DIR))
    io.add_argument(f"--{contract.PRETRAINED_CHANNEL}",
                    default=_env_path(f"SM_CHANNEL_{contract.PRETRAINED_CHANNEL.upper()}", None),
                    help=f"folder of staged weights for --weights {contract.PRETRAINED_WEIGHTS}")
    io.add_argument("--checkpoint-dir", default=contract.DEFAULT_CHECKPOINT_DIR)
    io.add_argument(f"--{contract.CHECKPOINT_SCOPE}", choices=contract.CHECKPOINT_SCOPES,
                    default=contract.CHECKPOINT_SCOPES[0],
                    help="'job': checkpoint under <checkpoint-dir>/<TRAINING_JOB_NAME>/ (tuning trials share one "
                         "CheckpointConfig)")
    # SageMaker adds hyperparameters of its own (the tuner's _tuning_objective_metric): tolerate them.
    args, unknown = p.parse_known_args(argv)
    args.unknown = unknown
    if args.augment is None:
        args.augment = "crop" if args.image_size < 64 else "flip-crop"
    for name in ("batch_size", "epochs", "image_size", "health_grad_interval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lr > 0:
        p.error("--lr must be positive")
    return args


# --- data --------------------------------------------------------------------------------------------
@dataclass
class Split:
    name: str
    classes: list[str]
    items: list = field(default_factory=list)  # PIL images when cached, else paths
    labels: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cached: bool = False


def scan_channel(
    name: str, root: str | None, classes: list[str] | None = None
) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class folders and image files of one channel, with a clear error for each way it can be wrong."""
    env = f"SM_CHANNEL_{name.upper()}"
    if not root:
        raise DataError(f"channel '{name}' is missing: set {env} or --{name} to a folder with one sub-folder per class")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"channel '{name}' folder {path} does not exist")
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"channel '{name}' ({path}) is empty: it needs one sub-folder of images per class")
    names = [d.name for d in class_dirs]
    if classes is not None and (unknown := sorted(set(names) - set(classes))):
        raise DataError(f"channel '{name}' has classes that train does not have: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes if classes is not None else names)}
    files: list[tuple[Path, int]] = []
    for d in class_dirs:
        images = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in contract.IMAGE_EXTENSIONS)
        if not images:
            raise DataError(f"class folder '{d.name}' in channel '{name}' holds no images "
                            f"({', '.join(contract.IMAGE_EXTENSIONS)})")
        files.extend((f, index[d.name]) for f in images)
    return names, files


def load_split(name: str, root: str | None, settings: TransformSettings, classes: list[str] | None = None,
               workers: int = 4) -> Split:
    """Decode every image once to find corrupt files before training starts; keep small datasets decoded."""
    names, files = scan_channel(name, root, classes)
    cached = sum(f.stat().st_size for f, _ in files) < CACHE_BUDGET_BYTES
    from torchvision.transforms import Resize

    shrink = Resize(settings.resize_size)

    def decode(path: Path):
        try:
            image = decode_image(path.read_bytes(), min_side=settings.resize_size)
        except ApiException as exc:
            return None, exc.message
        except OSError as exc:
            return None, str(exc)
        return (shrink(image) if cached else path), None

    split = Split(name, classes if classes is not None else names, cached=cached)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (path, label), (item, error) in zip(files, pool.map(decode, [f for f, _ in files]), strict=True):
            if error is not None:
                split.skipped.append((str(path), error))
                log.warning("skipping corrupt image %s: %s", path, error)
            else:
                split.items.append(item)
                split.labels.append(label)
    if not split.items:
        raise DataError(f"channel '{name}' has no readable images ({len(split.skipped)} corrupt)")
    if classes is None:
        empty = sorted({split.classes[lbl] for _, lbl in files} - {split.classes[lbl] for lbl in split.labels})
        if empty:
            raise DataError(f"class folder(s) {', '.join(empty)} in channel '{name}' hold no readable images")
    return split


class ImageDataset(Dataset):
    def __init__(self, split: Split, transform, min_side: int) -> None:
        self.split, self.transform, self.min_side = split, transform, min_side

    def __len__(self) -> int:
        return len(self.split.items)

    def __getitem__(self, key: int | tuple[int, int]):
        """`key`: an index, or (augmentation seed, index) from SeededSampler."""
        seed, i = key if isinstance(key, tuple) else (None, key)
        item = self.split.items[i]
        image = item if self.split.cached else decode_image(Path(item).read_bytes(), min_side=self.min_side)
        if seed is None:
            return self.transform(image), self.split.labels[i]
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays untouched
            torch.manual_seed(seed)
            return self.transform(image), self.split.labels[i]


class SeededSampler(Sampler):
    """Indices with a per-image augmentation seed drawn from the epoch's generator.

    Random augmentations then depend on (seed, epoch, image) only, not on which worker process decodes the image or
    how long that worker has lived: persistent workers keep their RNG streams across epochs, which would make a job
    resumed from a checkpoint (a spot interruption) train differently from the one it replaces.
    """

    def __init__(self, base: Sampler, generator: torch.Generator) -> None:
        self.base, self.generator = base, generator

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]  # the samplers given here are sized

    def __iter__(self):
        indices = list(self.base)
        seeds = torch.randint(0, 2**62, (len(indices),), generator=self.generator).tolist()
        return iter(zip(seeds, indices, strict=True))


# --- distributed -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def plan_world(nproc: int) -> tuple[list[str], str, int]:
    """Hosts from SM_HOSTS (SageMaker's list), this host, processes per host."""
    hosts = json.loads(os.environ.get("SM_HOSTS", "[]")) or ["localhost"]
    current = os.environ.get("SM_CURRENT_HOST", hosts[0])
    if nproc <= 0:
        gpus = torch.cuda.device_count()
        nproc = gpus if gpus > 1 else 1
    return hosts, current, nproc


def init_world(hosts: list[str], current: str, nproc: int, local_rank: int) -> World:
    size = len(hosts) * nproc
    world = World(rank=hosts.index(current) * nproc + local_rank, size=size,
                  local_rank=local_rank, local_size=nproc)
    if size > 1:
        os.environ.setdefault("MASTER_ADDR", hosts[0] if len(hosts) > 1 else "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=size)
        if world.main:
            log.info("distributed: %d processes on %d host(s), backend %s", size, len(hosts), backend)
    return world


# --- precision and input pipeline ----------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """How the training loop computes: autocast dtype (None: fp32), loss scaling, memory format."""

    dtype: torch.dtype | None = None
    scaler: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        if self.dtype is None:
            return "fp32"
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        # Disabled, the scaler's scale/step/update are plain backward()/optimizer.step() calls.
        return torch.amp.GradScaler(device.type, enabled=self.scaler)

    def to_device(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.preserve_format
        return x.to(device, non_blocking=True, memory_format=fmt)


def _native_bf16(device: torch.device) -> bool:
    """bf16 computed by the GPU itself (compute capability 8.0+). torch.cuda.is_bf16_supported() also answers
    True for emulated bf16 on a T4, which is slower than fp32: the capability decides."""
    return torch.cuda.get_device_capability(device)[0] >= 8 and torch.cuda.is_bf16_supported()


def choose_precision(mode: str, device: torch.device) -> Precision:
    """--amp on this device. fp16 needs a gradient scaler (its 5-bit exponent underflows small gradients);
    bf16 has fp32's range and needs none. channels_last lets cuDNN's tensor-core kernels skip layout
    transposes under mixed precision (PyTorch's memory-format tutorial); on CPUs it is not a gain here."""
    if mode == "off":
        return Precision()
    if device.type != "cuda":
        if mode == "fp16":
            raise ModelError("--amp fp16 needs a CUDA GPU; on a CPU use --amp off (fp32) or bf16")
        # CPUs keep fp32 unless asked: bench/train_bench.py measured bf16 autocast at 0.4x fp32 for the local
        # resnet18 at 32 px, even on a CPU with AMX-BF16 (the casts outweigh the small convolutions).
        return Precision(torch.bfloat16) if mode == "bf16" else Precision()
    if mode == "bf16" or (mode == "auto" and _native_bf16(device)):
        return Precision(torch.bfloat16, scaler=False, channels_last=True)
    return Precision(torch.float16, scaler=True, channels_last=True)


def make_optimizer(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; on CUDA its fused kernel (one launch for all parameters instead of several per group), which
    matters when a fast GPU waits on the host between small steps. GradScaler supports fused optimizers
    (docs.pytorch.org/docs/stable/generated/torch.optim.AdamW.html: `fused`)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or a stand-in's affinity), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def loader_options(device: torch.device, cached: bool, requested: int, local_size: int) -> dict:
    """DataLoader settings sized to the instance.

    GPU: decoding and augmentation run in worker processes (one CPU per rank left for the training process), so
    the GPU never waits on the CPU; batches land in pinned memory for asynchronous copies and are prefetched a
    few deep; workers persist across epochs instead of re-forking (and re-reading the cache) each epoch.
    CPU: an in-memory dataset needs no workers (they would take cores from the model); a streamed one decodes in
    a few workers.
    """
    cpus = max(1, usable_cpus() // max(local_size, 1))
    if requested >= 0:
        workers = requested
    elif device.type == "cuda":
        workers = min(MAX_LOADER_WORKERS, max(1, cpus - 1))
    else:
        workers = 0 if cached else min(8, cpus)
    options: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4 if device.type == "cuda" else 2)
    return options


# --- training ----------------------------------------------------------------------------------------
def emit(**metrics: float) -> None:
    """A metric line for MetricDefinitions (SageMaker) and the local stand-in: same regexes."""
    print(contract.format_metrics(**metrics), flush=True)


def evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, device: torch.device,
             precision: Precision = Precision()) -> tuple[float, float]:
    """Loss and accuracy, summed on the device and read back once."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = precision.to_device(x, device), y.to(device, non_blocking=True)
            with precision.autocast(device):
                out = model(x)
                loss = loss_fn(out, y)
            total_loss += loss.double() * len(y)
            correct += (out.argmax(1) == y).sum()
            count += len(y)
    return float(total_loss) / max(count, 1), int(correct) / max(count, 1)


def train_epoch(model: nn.Module, batches, loss_fn: nn.Module, optimizer, scheduler, device: torch.device,
                on_step=None, precision: Precision = Precision(), scaler: torch.amp.GradScaler | None = None
                ) -> tuple[float, int]:
    """One pass over `batches`; returns (summed loss, images seen). bench/ times this very loop.

    Nothing in a step reads a value back to the host: the loss sum stays on the device until the epoch ends,
    and `on_step` gets the loss as a tensor (the health checks accumulate on the device too).
    """
    train_mode(model)
    scaler = scaler or precision.grad_scaler(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for x, y in batches:
        x, y = precision.to_device(x, device), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        if on_step is not None:
            scaler.unscale_(optimizer)  # the health checks judge true gradients, not fp16-scaled ones
            on_step(loss.detach())
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        seen += len(y)
        loss_sum += loss.detach().double() * len(y)
    return float(loss_sum), seen


def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int,
                          precision: Precision = Precision()) -> None:
    """Re-estimate trainable batch-norm statistics with the epoch's final weights ("precise BN").

    Trained from scratch at a high rate, the running averages lag weights that move fast, and evaluation-mode
    losses explode after the first epochs; a cumulative average over a few batches fixes that for a small cost.
    """
    train_mode(model)
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not layers or max_batches <= 0:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average of the batches below
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= max_batches:
                break
            with precision.autocast(device):
                model(precision.to_device(x, device))
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum


def seed_epoch(seed: int, epoch: int, generator: torch.Generator) -> None:
    """Everything random in an epoch derives from (seed, epoch): a resumed job replays the same epochs."""
    torch.manual_seed(seed * 1000 + epoch)
    generator.manual_seed(seed * 1000 + epoch)


def fingerprint(args: argparse.Namespace, classes: list[str]) -> dict:
    keys = ("batch_size", "lr", "epochs", "backbone", "weights", "finetune", "image_size", "augment",
            "weight_decay", "seed", "bn_recalibration_batches")
    return {"classes": classes, **{k: getattr(args, k) for k in keys}}


def checkpoint_path(args: argparse.Namespace) -> Path:
    """Where this job checkpoints. Tuning trials (`--checkpoint-scope job`) keep a sub-folder each: every trial
    inherits the one CheckpointConfig of the tuning job's TrainingJobDefinition, and parallel trials must not
    overwrite (or resume) each other's state; a spot-interrupted trial restarts under the same
    TRAINING_JOB_NAME and finds its own."""
    base = Path(args.checkpoint_dir)
    job = os.environ.get("TRAINING_JOB_NAME")
    if getattr(args, "checkpoint_scope", "shared") == "job" and job:
        base = base / job
    return base / contract.CHECKPOINT_FILE


def release_checkpoint(args: argparse.Namespace) -> None:
    """A finished tuning trial removes its own checkpoint folder: nothing resumes a trial that completed, and every
    trial shares the tuning job's one CheckpointConfig.S3Uri, which SageMaker syncs into /opt/ml/checkpoints when a
    job starts (model-checkpoints.html), so each finished trial's ~100 MB would otherwise be downloaded by every
    later one. Unverified: whether a trial receives its siblings' files, and whether SageMaker mirrors a local
    deletion to S3 (the bucket's expire-checkpoints rule removes them either way). The final job (its own prefix)
    keeps its checkpoint."""
    if getattr(args, "checkpoint_scope", "shared") != "job" or not os.environ.get("TRAINING_JOB_NAME"):
        return
    folder = checkpoint_path(args).parent
    shutil.rmtree(folder, ignore_errors=True)  # a leftover costs download time, never the trial's result


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
    except RuntimeError as exc:
        # torch's zip writer reports a full disk as RuntimeError("... file write failed"): name the cause.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(errno.EIO, f"could not write the checkpoint ({exc})", str(tmp)) from exc
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def load_checkpoint(path: Path, expected: dict) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != expected:
        log.warning("checkpoint %s was written by another configuration; starting afresh", path)
        return None
    return state


def save_model(model_dir: Path, module: nn.Module, classes: list[str], settings: TransformSettings,
               args: argparse.Namespace, metrics: dict) -> None:
    """Exactly what the inference container loads: weights, model.json, code/inference.py and its modules."""
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), model_dir / contract.MODEL_WEIGHTS_FILE)
    config = {
        "format": 1,
        "backbone": args.backbone,
        "classes": classes,
        "transforms": settings.to_dict(),
        "hyperparameters": {k: v for k, v in fingerprint(args, classes).items() if k != "classes"},
        "metrics": metrics,
        "training_job": os.environ.get("TRAINING_JOB_NAME"),
    }
    (model_dir / contract.MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))
    code = model_dir / contract.MODEL_CODE_DIR
    (code / contract.PACKAGE).mkdir(parents=True, exist_ok=True)
    for module_file in contract.INFERENCE_MODULES:
        shutil.copy2(HERE / module_file, code / contract.PACKAGE / module_file)
    shutil.copy2(HERE / contract.ENTRY_DIR / contract.INFERENCE_PROGRAM, code / contract.INFERENCE_PROGRAM)
    (code / "requirements.txt").write_text(INFERENCE_REQUIREMENTS)


def run(args: argparse.Namespace, world: World) -> dict | None:
    device = torch.device(f"cuda:{world.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        # The CPUs this process may use (a local stand-in may pin parallel trials apart), shared by local ranks.
        torch.set_num_threads(max(1, usable_cpus() // world.local_size))
    else:
        torch.cuda.set_device(device)
        # Fixed input shapes (every batch but the last): cuDNN's autotuner picks the fastest kernels once.
        torch.backends.cudnn.benchmark = True
    precision = choose_precision(args.amp, device)

    settings = TransformSettings.for_size(args.image_size, args.augment)
    train_tf, eval_tf = build_transforms(settings)
    # The up-front check decodes every file (PIL releases the GIL while decoding): use every CPU for it.
    train = load_split(contract.TRAIN, args.train, settings, workers=usable_cpus())
    valid = load_split(contract.VALID, args.valid, settings, train.classes, workers=usable_cpus())
    test = load_split(contract.TEST, args.test, settings, train.classes, workers=usable_cpus())
    skipped = len(train.skipped) + len(valid.skipped) + len(test.skipped)
    classes = train.classes
    if world.main:
        log.info("data: %d classes, %d train / %d valid / %d test images (%s), %d skipped", len(classes),
                 len(train.items), len(valid.items), len(test.items), "cached" if train.cached else "streamed",
                 skipped)
        emit(**{contract.SKIPPED_IMAGES: skipped})

    loader_opts = loader_options(device, train.cached, args.num_workers, world.local_size)
    if world.main:
        log.info("precision %s%s; data loader: %d workers, pinned memory %s", precision.name,
                 ", channels-last" if precision.channels_last else "", loader_opts["num_workers"],
                 loader_opts["pin_memory"])
    generator = torch.Generator()
    train_ds = ImageDataset(train, train_tf, settings.resize_size)
    sampler: DistributedSampler | None = DistributedSampler(
        train_ds, world.size, world.rank, shuffle=True, seed=args.seed) if world.size > 1 else None
    train_loader = DataLoader(train_ds, batch_size=args.batch_size,
                              sampler=SeededSampler(sampler or RandomSampler(train_ds, generator=generator), generator),
                              **loader_opts)
    eval_loaders = {s.name: DataLoader(ImageDataset(s, eval_tf, settings.resize_size),
                                       batch_size=max(args.batch_size, 64), **loader_opts) for s in (valid, test)}

    torch.manual_seed(args.seed)
    module = build_model(args.backbone, len(classes), args.weights_file, args.finetune).to(device)
    if precision.channels_last:
        module = module.to(memory_format=torch.channels_last)
    scaler = precision.grad_scaler(device)
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, args.lr, args.weight_decay, device)
    steps = args.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps,
                                                    pct_start=0.15)
    health = HealthMonitor(grad_interval=args.health_grad_interval)
    history: list[dict] = []
    expected = fingerprint(args, classes)
    ckpt_path = checkpoint_path(args)
    state = load_checkpoint(ckpt_path, expected)
    start = 1
    if state:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        health.load_state_dict(state["health"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = state["history"]
        start = state["epoch"] + 1
        if world.main:
            log.info("resuming from %s after epoch %d", ckpt_path, state["epoch"])
    elif world.main:
        probe = precision.to_device(next(iter(eval_loaders[contract.VALID]))[0][: min(32, args.batch_size)], device)
        twin = copy.deepcopy(module)
        train_mode(twin)
        health.observe_initialisation(twin, probe)
        del twin

    hook = create_hook(module, loss_fn, enabled=args.debugger == "on",
                       steps_per_epoch={"train": len(train_loader), "eval": len(eval_loaders[contract.VALID])})
    model = module
    if world.size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(module, device_ids=ids)

    for epoch in range(start, args.epochs + 1):
        seed_epoch(args.seed, epoch, generator)
        if sampler is not None:
            sampler.set_epoch(epoch)
        hook.train()
        started = time.perf_counter()
        loss_sum, seen = train_epoch(model, train_loader, loss_fn, optimizer, scheduler, device,
                                     (lambda loss: health.observe_step(loss, module)) if world.main else None,
                                     precision, scaler)
        elapsed = time.perf_counter() - started
        totals = torch.tensor([loss_sum, seen, elapsed], dtype=torch.float64)
        if world.size > 1:
            dist.all_reduce(totals)
        train_loss = float(totals[0] / totals[1])
        throughput = float(totals[1] / (totals[2] / world.size))
        if world.main:
            hook.predict()  # the recalibration passes are neither training nor evaluation steps for the rules
            recalibrate_batchnorm(module, train_loader, device, args.bn_recalibration_batches, precision)
            hook.eval()
            valid_loss, valid_acc = evaluate(module, eval_loaders[contract.VALID], loss_fn, device, precision)
            health.end_epoch(epoch, train_loss, valid_loss)
            record = {"epoch": epoch, contract.TRAIN_LOSS: train_loss, contract.VALID_LOSS: valid_loss,
                      contract.VALID_ACCURACY: valid_acc, contract.THROUGHPUT: throughput}
            history.append(record)
            print(f"epoch={epoch}/{args.epochs} ", end="")
            emit(**{k: v for k, v in record.items() if k != "epoch"})
            save_checkpoint(ckpt_path, {"epoch": epoch, "fingerprint": expected, "model": module.state_dict(),
                                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                        "health": health.state_dict(), "history": history,
                                        "scaler": scaler.state_dict() if precision.scaler else None})
        if world.size > 1:
            dist.barrier()

    if not world.main:
        return None
    # The test set is scored once: not a step of the EVAL (validation) series the Debugger rules compare.
    hook.predict()
    test_loss, test_acc = evaluate(module, eval_loaders[contract.TEST], loss_fn, device, precision)
    report = health.report()
    for check, verdict in report["checks"].items():
        log.info("health: %s %s (%s)", check, verdict["status"], verdict["detail"])
    emit(**{contract.TEST_LOSS: test_loss, contract.TEST_ACCURACY: test_acc,
            contract.HEALTH_ISSUES: len(report["issues"])})
    metrics = {contract.TEST_LOSS: test_loss, contract.TEST_ACCURACY: test_acc,
               contract.HEALTH_ISSUES: len(report["issues"]), contract.SKIPPED_IMAGES: skipped,
               **({f"final_{k}": v for k, v in history[-1].items() if k != "epoch"} if history else {})}
    out = Path(args.output_data_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / contract.HEALTH_FILE).write_text(json.dumps(report, indent=2))
    (out / contract.HISTORY_FILE).write_text(json.dumps(
        {"epochs": history, "test": {contract.TEST_LOSS: test_loss, contract.TEST_ACCURACY: test_acc},
         "skipped_images": [{"path": p, "reason": r} for s in (train, valid, test) for p, r in s.skipped]},
        indent=2))
    save_model(Path(args.model_dir), module, classes, settings, args, metrics)
    log.info("model written to %s", args.model_dir)
    release_checkpoint(args)
    return metrics


def worker(local_rank: int, args: argparse.Namespace, hosts: list[str], current: str, nproc: int) -> None:
    _setup_logging()
    world = init_world(hosts, current, nproc, local_rank)
    try:
        run(args, world)
    finally:
        if world.size > 1 and dist.is_initialized():
            dist.destroy_process_group()


# --- entry point -------------------------------------------------------------------------------------
def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def write_failure(message: str) -> bool:
    """SageMaker shows this file's content as the job's FailureReason. Never raises (it runs inside error
    handlers, on a disk that may be full): when the file cannot be written, the reason goes to stderr."""
    failure = Path(os.environ.get("SM_OUTPUT_DIR", str(Path(contract.FAILURE_FILE).parent))) / "failure"
    try:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(message[:1024])
        return True
    except Exception:  # a full disk, a read-only mount: stderr below is all that is left
        _last_words(message)
        return False


def _last_words(message: str) -> None:
    """One line on stderr, which may itself be broken: nothing here may raise."""
    with contextlib.suppress(Exception):
        print(f"training failed: {message}", file=sys.stderr, flush=True)


def failure_reason(exc: BaseException) -> str:
    """One line for FailureReason: what failed, and for an I/O error the path and the cause."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on device{where}: free disk space or raise VolumeSizeInGB"
        return f"I/O error{where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def resolve_weights(args: argparse.Namespace) -> None:
    """--weights imagenet -> the staged channel's file, before any data is read: a missing channel fails now."""
    args.weights_file = (str(staged_weights(args.backbone, getattr(args, contract.PRETRAINED_CHANNEL)))
                         if args.weights == contract.PRETRAINED_WEIGHTS else args.weights)


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    args = parse_args(argv)
    if args.unknown:
        log.warning("ignoring arguments train.py does not know: %s", " ".join(args.unknown))
    hosts, current, nproc = plan_world(args.nproc)
    try:
        if current not in hosts:
            raise DataError(f"SM_CURRENT_HOST {current!r} is not in SM_HOSTS {hosts}")
        resolve_weights(args)
        choose_precision(args.amp, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        install_smdebug_if_needed(enabled=args.debugger == "on")
        if nproc > 1:
            import torch.multiprocessing as mp

            # Catch layout mistakes here: an error inside a spawned worker reaches us only as text.
            classes = scan_channel(contract.TRAIN, args.train)[0]
            for channel in (contract.VALID, contract.TEST):
                scan_channel(channel, getattr(args, channel), classes)

            mp.spawn(worker, args=(args, hosts, current, nproc), nprocs=nproc, join=True)
        else:
            worker(0, args, hosts, current, 1)
    except (DataError, ModelError) as exc:
        with contextlib.suppress(Exception):
            log.error("%s", exc)
        write_failure(str(exc))
        return 2
    except Exception as exc:
        # Anything else, a full disk included, ends the job with a reason; this handler itself never raises
        # (a second exception here would hide the first and, locally, leave the job hanging).
        reason = failure_reason(exc)
        with contextlib.suppress(Exception):
            traceback.print_exc()
        with contextlib.suppress(Exception):
            log.error("%s", reason)
        write_failure(reason)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
