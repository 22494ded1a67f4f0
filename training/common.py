"""Plumbing shared by ``train_image.py`` (stage 1) and ``train_video.py`` (stage 2).

Kept deliberately small and free of model code:

* **options** — one dataclass per stage (defined by the scripts, derived from :class:`TrainOptions`), named
  presets, ``--set key=value`` overrides with nested keys into the ``seg2vid.config`` dataclasses;
* **run folder** — ``runs/<name>/`` with ``options.json``, ``log.csv``, ``checkpoints/``, ``samples/``;
* **distributed** — ``torchrun`` detection, DDP process group set-up / tear-down, rank-0-only side effects;
* **checkpoints** — atomic writes (temp file + ``os.replace``), keep-last-K, automatic resume, RNG states;
* **data order** — a sampler whose order is a pure function of ``(seed, epoch)`` and that can start mid-epoch,
  so that a resumed run sees exactly the batches an uninterrupted run would have seen;
* **logging** — ``log.csv`` always, TensorBoard when installed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import datetime
import json
import math
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

# --------------------------------------------------------------------------------------------------------------
# Options and presets
# --------------------------------------------------------------------------------------------------------------

AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class TrainOptions:
    """Options shared by both stages. Every field can be set from a preset and overridden on the command line.

    The scripts extend this with their stage's fields (losses, the model config under ``model``).
    """

    # Run
    stage: str = ""  # "image" (stage 1) or "video" (stage 2); fixed by the script
    preset: str = ""
    name: str = ""  # run folder name under runs_dir; default "<preset>-<stage>"
    runs_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    init_from: str = ""  # a pipeline or stage folder whose weights start a fresh run

    # Data: "synthcity" (rendered on the fly), "synthcity:/folder" (pre-rendered), "cityscapes:/root"
    data: str = "synthcity"
    labels_root: str = ""  # Cityscapes: folder of predicted label maps for the sequences (see data/cityscapes.py)
    image_size: tuple[int, int] = (128, 256)  # (H, W), both divisible by 32
    num_train_clips: int = 200_000  # SynthCity seeds 0 … N-1 (held-out seeds start at HELDOUT_SEED_START)
    num_workers: int = 2

    # Optimisation (Adam)
    batch_size: int = 8  # per process; the global batch is batch_size × world size
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    max_steps: int = 100_000  # total optimisation steps of the run (a resumed run continues up to it)
    lr_decay_steps: int = 0  # linear decay of the learning rate to 0 over the last N steps (pix2pixHD)
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    ema_decay: float = 0.999  # exponential moving average of the weights (exported); 0 = off

    # Hardware
    amp: str = "off"  # "off" | "bf16" | "fp16" (fp16 uses a GradScaler)
    compile: bool = False  # torch.compile the networks
    channels_last: bool = True  # 4-D weights (and, on CUDA, input batches) in channels_last memory
    deterministic: bool = False  # torch.use_deterministic_algorithms (bitwise-reproducible resume on CPU)
    num_threads: int = 0  # CPU threads for torch (0 = torch's default: all cores); 1-2 on a shared machine

    # Perceptual loss
    vgg: bool = True  # use the VGG-19 loss when weights are available (recorded as what actually ran)
    vgg_weights: str = ""  # a local torchvision VGG-19 state dict (.pth / .safetensors); else the torch cache

    # Book-keeping
    log_every: int = 50
    sample_every: int = 1000
    ckpt_every: int = 1000
    keep_last: int = 3
    num_samples: int = 4  # held-out examples shown in the sample images / videos


# Frozen on resume: changing these would make the checkpoint meaningless for the run.
FROZEN_ON_RESUME = ("stage", "model", "disc", "image_size")

# Presets are override dicts (dotted keys into the stage's options dataclass), one per stage. "shared" applies
# to both stages. Only what differs from the dataclass defaults is listed.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The CPU default that trains the bundled model (checkpoints/): SynthCity rendered on the fly, 128×256, on
    # two cores (one renders clips in a DataLoader worker, one trains; --set num_threads=0 uses every core).
    "synthcity-128x256": {
        "shared": {"data": "synthcity", "image_size": (128, 256), "num_workers": 1, "num_threads": 1,
                   "log_every": 25, "sample_every": 500, "ckpt_every": 250, "keep_last": 3},
        # What trained checkpoints/ (see its README): stage 1 adds pix2pix's L1 term, stage 2 the supervised
        # flow term (SynthCity has exact flow; neither is in the paper) and a 3× higher learning rate, without
        # which stage 2 sits in the "no motion" saddle for thousands of CPU steps.
        "image": {"batch_size": 4, "max_steps": 10_000, "lr_decay_steps": 5_000, "ema_decay": 0.995,
                  "loss.lambda_l1": 10.0},
        "video": {"batch_size": 4, "max_steps": 10_000, "lr_decay_steps": 5_000, "ema_decay": 0.995, "lr": 3e-4,
                  "lambda_flow_supervised": 1.0},
    },
    # The paper's setting (section 4.2) on Cityscapes sequences, multi-GPU.
    "cityscapes-128x256": {
        "shared": {"data": "cityscapes:data/cityscapes", "image_size": (128, 256), "num_workers": 8,
                   "log_every": 100, "sample_every": 2000, "ckpt_every": 2000, "keep_last": 5, "amp": "bf16"},
        "image": {"batch_size": 16, "max_steps": 100_000, "lr_decay_steps": 50_000},
        "video": {"batch_size": 16, "max_steps": 100_000, "lr_decay_steps": 50_000},
    },
    "cityscapes-256x512": {
        "shared": {"data": "cityscapes:data/cityscapes", "image_size": (256, 512), "num_workers": 8,
                   "log_every": 100, "sample_every": 2000, "ckpt_every": 2000, "keep_last": 5, "amp": "bf16"},
        "image": {"batch_size": 8, "max_steps": 150_000, "lr_decay_steps": 75_000},
        "video": {"batch_size": 8, "max_steps": 150_000, "lr_decay_steps": 75_000},
    },
    # Tests / CI: a few steps of tiny networks on tiny SynthCity clips, bitwise reproducible on CPU.
    "tiny": {
        "shared": {"data": "synthcity", "image_size": (32, 64), "num_train_clips": 16, "num_workers": 0,
                   "batch_size": 2, "max_steps": 4, "log_every": 1, "sample_every": 2, "ckpt_every": 2,
                   "keep_last": 2, "num_samples": 2, "ema_decay": 0.9, "vgg": False, "deterministic": True,
                   "num_threads": 1},
        "image": {},
        "video": {},
    },
}


def register_model_presets(stage: str, table: dict[str, dict[str, Any]]) -> None:
    """Let a script add its stage's model overrides (``model.*`` keys) to the presets, keyed by preset name."""
    for preset, overrides in table.items():
        PRESETS[preset].setdefault(stage, {}).update(overrides)


class OptionError(ValueError):
    """A bad option value or key; the scripts turn it into ``parser.error`` (exit code 2, one line)."""


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true/false)")


def _parse_like(text: str, current: Any) -> Any:
    """Parse a command-line string into the type of ``current`` (the field's present value)."""
    if isinstance(current, bool):
        return _parse_bool(text)
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        parts = [p for p in re.split(r"[,x×\s\[\]()]+", text.strip()) if p]
        kind = type(current[0]) if current else float
        return type(current)(_parse_like(p, kind()) for p in parts)
    try:  # None or anything else: JSON, then plain text
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Check / convert a typed value (from a preset or a typed flag) against the field's present value."""
    if isinstance(value, str) and not isinstance(current, str):
        return _parse_like(value, current)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"expected true/false, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(current)(value)
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"expected {type(current).__name__}, got {value!r}")
    return value


def set_option(options: Any, key: str, value: Any) -> None:
    """Set a dotted ``key`` (e.g. ``lr`` or ``model.base_channels``) on nested dataclasses, type-checked.

    String values are parsed into the field's type. Raises :class:`OptionError` naming the key.
    """
    *parents, leaf = key.split(".")
    target = options
    for i, part in enumerate(parents):
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise OptionError(f"unknown option {'.'.join(parents[: i + 1])!r} (in {key!r})")
        target = getattr(target, part)
    names = {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
    if leaf not in names:
        hint = f"; known: {', '.join(sorted(names))}" if parents and names else ""
        raise OptionError(f"unknown option {key!r}{hint}")
    current = getattr(target, leaf)
    if dataclasses.is_dataclass(current):
        raise OptionError(f"{key!r} is a group of options; set its fields, e.g. {key}.<field>=...")
    try:
        setattr(target, leaf, _coerce(value, current, key))
    except (TypeError, ValueError) as e:
        raise OptionError(f"bad value for {key!r}: {e}") from None


def options_to_dict(options: Any) -> dict:
    """Options → JSON-ready dict (config dataclasses through their own ``to_dict`` when they have one)."""

    def convert(obj):
        if dataclasses.is_dataclass(obj):
            if hasattr(obj, "to_dict"):
                return convert(obj.to_dict())
            return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        if isinstance(obj, (tuple, list)):
            return [convert(v) for v in obj]
        return obj

    return convert(options)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"a": 1}}`` → ``{"model.a": 1}``; lists stay values."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate_common(options: TrainOptions) -> None:
    """Value checks shared by both stages; raise :class:`OptionError` with an actionable message."""
    o = options
    if o.amp not in AMP_MODES:
        raise OptionError(f"amp must be one of {', '.join(AMP_MODES)}; got {o.amp!r}")
    if len(o.image_size) != 2:
        raise OptionError(f"image_size must be two numbers (H, W), e.g. 128x256; got {o.image_size!r}")
    h, w = o.image_size
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise OptionError(f"image_size must be two positive multiples of 32 (H, W); got {h}x{w}")
    for key in ("batch_size", "max_steps", "log_every", "sample_every", "ckpt_every", "keep_last", "num_train_clips",
                "num_samples"):
        if getattr(o, key) < 1:
            raise OptionError(f"{key} must be at least 1; got {getattr(o, key)}")
    for key in ("num_workers", "lr_decay_steps", "grad_clip", "num_threads"):
        if getattr(o, key) < 0:
            raise OptionError(f"{key} must not be negative; got {getattr(o, key)}")
    if not o.lr > 0:
        raise OptionError(f"lr must be positive; got {o.lr}")
    if not 0 <= o.ema_decay < 1:
        raise OptionError(f"ema_decay must lie in [0, 1); got {o.ema_decay}")
    if not re.fullmatch(r"[\w.\-]+", o.name or "x"):
        raise OptionError(f"name must be a plain folder name (letters, digits, . _ -); got {o.name!r}")
    if o.vgg_weights and not Path(o.vgg_weights).is_file():
        raise OptionError(f"--vgg-weights: no such file: {o.vgg_weights}")
    validate_data_spec(o.data)


def validate_data_spec(spec: str) -> None:
    kind, sep, path = spec.partition(":")
    if kind not in ("synthcity", "cityscapes"):
        raise OptionError(f"data must be 'synthcity', 'synthcity:FOLDER' or 'cityscapes:ROOT'; got {spec!r}")
    if kind == "cityscapes" and not path:
        raise OptionError("data 'cityscapes' needs the dataset root: --data cityscapes:/path/to/cityscapes")
    if path and not Path(path).is_dir():
        raise OptionError(f"data folder not found: {path} (from --data {spec})")


def build_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """The command line shared by both scripts. Flags are shortcuts for ``--set`` keys."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help=f"named option set: {', '.join(PRESETS)} (default synthcity-128x256)")
    p.add_argument("--name", help="run folder name under --runs-dir (default <preset>-" + stage + ")")
    p.add_argument("--runs-dir", dest="runs_dir", help="where run folders live (default runs)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override any option, e.g. --set lr=1e-4 batch_size=8 model.base_channels=16")
    p.add_argument("--data", help="synthcity | synthcity:FOLDER | cityscapes:ROOT")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="per-process batch size")
    p.add_argument("--lr", type=float)
    p.add_argument("--max-steps", dest="max_steps", type=int, help="total steps of the run")
    p.add_argument("--num-workers", dest="num_workers", type=int, help="DataLoader worker processes")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (torchrun picks cuda:LOCAL_RANK)")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA (bf16 also works on CPU)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the networks")
    p.add_argument("--vgg-weights", dest="vgg_weights", metavar="FILE", help="local VGG-19 weights for the loss")
    p.add_argument("--no-vgg", dest="vgg", action="store_const", const=False, help="train without the VGG loss")
    p.add_argument("--init-from", dest="init_from", metavar="FOLDER",
                   help="start a new run from exported weights (a pipeline or stage folder)")
    p.add_argument("--fresh", action="store_true",
                   help="do not resume: move an existing run folder aside (to <name>.<time>) and start over")
    p.add_argument("--export", metavar="DIR", help="after training, export this stage (EMA weights) to DIR")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar (log lines only)")
    return p


FLAG_KEYS = ("name", "runs_dir", "data", "batch_size", "lr", "max_steps", "num_workers", "seed", "device", "amp",
             "compile", "vgg_weights", "vgg", "init_from")


def cli_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(key, value) pairs from ``--set`` (strings, parsed later) and the explicit flags (already typed)."""
    pairs: list[tuple[str, Any]] = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        pairs.append((key.strip(), value))
    for key in FLAG_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            pairs.append((key, value))
    return pairs


def _validate_configs(options: Any) -> None:
    """Rebuild every nested config through its ``from_dict`` (type normalisation + the config's own checks)."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if dataclasses.is_dataclass(value) and hasattr(value, "from_dict"):
            setattr(options, f.name, type(value).from_dict(value.to_dict()))


def resolve_options(parser, args, options_cls, stage: str, finalize=None) -> tuple[Any, dict | None]:
    """Preset + command line (+ the stored options of an existing run) → validated options.

    A new run starts from the preset's values. A run folder that already holds ``options.json`` is resumed: its
    stored options are the base, and the command line may change what does not alter the networks (e.g. raise
    ``max_steps``); changing a frozen key (``model.*``, ``disc.*``, ``image_size``) or the preset is refused.
    Returns ``(options, stored)`` (``stored`` = the existing ``options.json``, or ``None`` for a new run). Any bad
    key or value ends in ``parser.error`` (exit code 2). ``finalize(options)`` runs the script's own checks.
    """
    overrides = cli_overrides(parser, args)
    preset = args.preset or "synthcity-128x256"
    if preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    runs_dir = args.runs_dir or "runs"
    name = args.name or f"{preset}-{stage}"
    run_dir = Path(runs_dir) / name

    stored = None
    if (run_dir / "options.json").is_file() and not args.fresh:
        try:
            stored = json.loads((run_dir / "options.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            parser.error(f"cannot read {run_dir / 'options.json'}: {e} (use --fresh to start over)")
        if stored.get("stage") != stage:
            parser.error(f"run folder {run_dir} holds a {stored.get('stage')!r} run, not a {stage!r} run")
        if args.preset is not None and args.preset != stored.get("preset"):
            parser.error(f"run {run_dir} was created with preset {stored.get('preset')!r}, not {args.preset!r}; "
                         "resume it without --preset, or use --fresh / another --name")
        preset = stored.get("preset", preset)

    try:
        options = options_cls()
        options.stage = stage
        base = {**flatten(PRESETS[preset].get("shared", {})), **flatten(PRESETS[preset].get(stage, {}))}
        base["preset"] = preset
        if stored is not None:
            base.update({k: v for k, v in flatten(stored).items() if k != "stage"})
        for key, value in base.items():
            set_option(options, key, value)
        frozen_before = {k: v for k, v in flatten(options_to_dict(options)).items()}
        for key, value in overrides:
            set_option(options, key, value)
        options.name, options.runs_dir = name, runs_dir
        if hasattr(options, "model") and hasattr(options.model, "image_size"):
            options.model.image_size = tuple(options.image_size)
        _validate_configs(options)
        validate_common(options)
        if finalize is not None:
            finalize(options)
    except (OptionError, ValueError, TypeError) as e:
        parser.error(str(e))

    if stored is not None:
        now = flatten(options_to_dict(options))
        changed = [k for k in now if k.split(".")[0] in FROZEN_ON_RESUME and frozen_before.get(k) != now[k]]
        if changed:
            k = changed[0]
            parser.error(f"run {run_dir} was created with {k}={frozen_before.get(k)!r}, not {now[k]!r}; resume it "
                         "unchanged, or use --fresh / another --name")
    return options, stored


# --------------------------------------------------------------------------------------------------------------
# Distributed set-up
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """Where this process runs. Single-process runs have rank 0 of world size 1."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {name!r} requested but CUDA is not available here")
    return device


def setup_distributed(device_name: str) -> Distributed:
    """Initialise DDP when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else describe the single process.

    CUDA ranks use NCCL and ``cuda:LOCAL_RANK``; CPU ranks use Gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    elif device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return Distributed(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def teardown_distributed() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(dist: Distributed) -> None:
    if dist.enabled:
        torch_dist.barrier()


def all_gather_objects(dist: Distributed, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one element in single-process runs)."""
    if not dist.enabled:
        return [obj]
    out = [None] * dist.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(dist: Distributed, values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks (one all-reduce) so rank 0 logs the global numbers."""
    if not dist.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=dist.device)
    torch_dist.all_reduce(t)
    return {k: float(v) / dist.world_size for k, v in zip(keys, t.tolist())}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_torch(options: TrainOptions, dist: Distributed) -> None:
    """Threads, determinism and fast-math switches."""
    if options.num_threads > 0:
        torch.set_num_threads(options.num_threads)
    if options.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=dist.device.type != "cpu")
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = not options.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def prepare_module(module: torch.nn.Module, options: TrainOptions, dist: Distributed) -> torch.nn.Module:
    """Move a network to the device, its 4-D weights in ``channels_last`` (the seg2vid networks run their 2-D
    convolutions channels_last; matching weights keep DDP's gradient buckets in the layout autograd produces)."""
    module = module.to(dist.device)
    if options.channels_last:
        for p in module.parameters():  # nn.Module.to(memory_format=...) refuses the 5-D weights of 3-D convs
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return module


def wrap_module(module: torch.nn.Module, options: TrainOptions, dist: Distributed) -> torch.nn.Module:
    """DDP (under torchrun) and torch.compile (``--compile``) around a prepared module."""
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist.device.index] if dist.device.type == "cuda" else None
        # 1×1 kernels: channels_last and contiguous strides differ only on size-1 dims (same memory order), which
        # DDP's reducer reports as a layout mismatch although nothing is copied differently.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        module = DistributedDataParallel(module, device_ids=ids)
    if options.compile:
        module = torch.compile(module)
    return module


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside torch.compile / DDP wrappers."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        else:
            return module


def to_device_batch(batch: dict, dist: Distributed, options: TrainOptions) -> dict:
    """Tensors of a batch to the device (non-blocking; 4-D float tensors channels_last on CUDA)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(dist.device, non_blocking=True)
            if options.channels_last and dist.device.type == "cuda" and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------------------------
# Mixed precision, EMA, learning-rate schedule
# --------------------------------------------------------------------------------------------------------------


def autocast(options: TrainOptions, dist: Distributed):
    """The autocast context for forward passes (a no-op with ``amp=off``)."""
    if options.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if options.amp == "bf16" else torch.float16
    return torch.autocast(device_type=dist.device.type, dtype=dtype)


def make_scaler(options: TrainOptions, dist: Distributed) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(dist.device.type, enabled=options.amp == "fp16")


def learning_rate(step: int, base_lr: float, max_steps: int, decay_steps: int) -> float:
    """Constant, then linear decay to 0 over the last ``decay_steps`` steps (pix2pixHD). A pure function of step."""
    if decay_steps <= 0:
        return base_lr
    start = max_steps - decay_steps
    if step < start:
        return base_lr
    return base_lr * max(0.0, 1.0 - (step - start) / decay_steps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with warm-up, so that early exports are not dominated by the random initialisation."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema ← decay · ema + (1 − decay) · model`` for parameters; buffers (e.g. norm statistics) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def cli_model_keys(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The ``model.*`` options given on the command line (without the prefix), e.g. ``["layered_flow"]``."""
    return [key[len("model."):] for key, _ in cli_overrides(parser, args) if key.startswith("model.")]


def build_stage_model(model_cls, options, dist: Distributed, what: str, keep: Sequence[str] = ()) -> torch.nn.Module:
    """A fresh ``model_cls(options.model)``, or one initialised from ``--init-from``.

    With ``--init-from`` the exported stage's config replaces ``options.model`` (at the run's ``image_size``),
    except the ``keep`` keys (the ``model.*`` options given with ``--set``, see :func:`cli_model_keys`), and its
    weights are loaded strictly, so a kept option may change how the network runs but not its weights' shapes.
    A bad folder, or a kept option that would change the weights, raises ``ValueError`` for the script to report.
    """
    if not options.init_from:
        return model_cls(options.model)
    from training.export import load_stage_weights

    loaded = load_stage_weights(options.init_from, model_cls)
    given = options.model.to_dict()
    config = {**loaded.config.to_dict(), **{k: given[k] for k in keep}, "image_size": list(options.image_size)}
    options.model = model_cls.config_class.from_dict(config)
    model = model_cls(options.model)
    try:
        model.load_state_dict(loaded.state_dict())
    except RuntimeError as e:
        changed = ", ".join(f"model.{k}" for k in keep) or "the config"
        first = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"{changed} would change the weights of {options.init_from} (first problem: {first}); "
                         "only options that keep them can be set") from None
    kept = f", except {', '.join(f'model.{k}' for k in keep)}" if keep else ""
    say(dist, f"initialised the {what} from {options.init_from} (its model config replaces model.*{kept})")
    return model


def run_script(stage: str, doc: str | None, options_cls, check_options, train, argv: list[str] | None) -> Path:
    """The shared ``main`` of both training scripts: parse and resolve options, set up DDP, train, tear down."""
    parser = build_parser(stage, doc)
    args = parser.parse_args(argv)
    options, _ = resolve_options(parser, args, options_cls, stage, check_options)
    try:
        dist = setup_distributed(options.device)
    except OptionError as e:
        parser.error(str(e))
    try:
        return train(options, dist, args, parser)
    finally:
        teardown_distributed()


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


# --------------------------------------------------------------------------------------------------------------
# Run folder, checkpoints and RNG state
# --------------------------------------------------------------------------------------------------------------

CHECKPOINT_RE = re.compile(r"^step-(\d{8,})\.pt$")


@dataclass(frozen=True)
class RunFolder:
    """``runs/<name>/``: options.json, log.csv, checkpoints/step-XXXXXXXX.pt, samples/, tensorboard/."""

    root: Path

    @property
    def options_file(self) -> Path:
        return self.root / "options.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def log_file(self) -> Path:
        return self.root / "log.csv"


def move_aside(run_dir: Path) -> Path | None:
    """``--fresh``: rename an existing run folder to ``<name>.<UTC time>`` (nothing is deleted)."""
    if not run_dir.exists():
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    target, n = run_dir.with_name(f"{run_dir.name}.{stamp}"), 1
    while target.exists():
        target, n = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}"), n + 1
    os.replace(run_dir, target)
    return target


def atomic_write_bytes(path: Path, write) -> None:
    """Write a file so that a reader only ever sees the old or the complete new content.

    ``write(fileobj)`` fills a temporary file in the same folder, which is flushed, fsynced and then renamed over
    ``path`` with ``os.replace`` (atomic on POSIX and Windows). A kill mid-write leaves only a ``*.tmp`` file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``step-XXXXXXXX.pt`` in ``folder``, oldest first. Temp files never match."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(folder: Path, step: int, state: dict, keep_last: int) -> Path:
    """Atomically write ``state`` as ``folder/step-XXXXXXXX.pt`` and keep only the newest ``keep_last``."""
    path = folder / f"step-{step:08d}.pt"
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    for _, old in list_checkpoints(folder)[:-keep_last]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


def load_checkpoint(path: Path) -> dict:
    """Load a training-state file with ``weights_only=True`` (tensors, numbers, strings, containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_latest_checkpoint(folder: Path, log=print) -> tuple[dict, Path] | None:
    """The newest loadable checkpoint in ``folder`` (falling back to older ones if a file is damaged)."""
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path), path
        except Exception as e:  # a damaged file (disk error, manual copy): say so and try the previous one
            log(f"warning: cannot load {path} ({type(e).__name__}: {e}); trying an older checkpoint")
    return None


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states as tensors/numbers (loadable with weights_only)."""
    py_version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python_version": int(py_version),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def rng_state_for_rank(checkpoint: dict, dist: Distributed) -> dict | None:
    """This rank's RNG state from a checkpoint (``None`` if it was written with another world size)."""
    states = checkpoint.get("rng") or []
    if len(states) != dist.world_size:
        say(dist, f"note: the checkpoint holds RNG states of {len(states)} process(es), this run has "
                  f"{dist.world_size}; random streams restart (data order is still resumed exactly)")
        return None
    return states[dist.rank]


def restore_rng_state(state: dict[str, Any] | None, device: torch.device) -> None:
    """Inverse of :func:`capture_rng_state` (``None``: leave the generators as they are)."""
    if state is None:
        return
    random.setstate((state["python_version"], tuple(state["python_state"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def open_run(options: TrainOptions, dist: Distributed, fresh: bool) -> tuple[RunFolder, tuple[dict, Path] | None]:
    """The run folder and its newest checkpoint (``None`` for a new run). ``fresh`` moves an old run aside."""
    run = RunFolder(Path(options.runs_dir) / options.name)
    if fresh and dist.is_main:
        moved = move_aside(run.root)
        if moved:
            say(dist, f"--fresh: moved the previous run to {moved}")
    barrier(dist)
    resumed = load_latest_checkpoint(run.checkpoints, log=lambda m: say(dist, m))
    if resumed and options.init_from:
        say(dist, f"resuming {resumed[1]}; --init-from {options.init_from} is ignored")
        options.init_from = ""
    return run, resumed


def restore_training_state(state: dict, stateful: dict[str, Any], optional: tuple[str, ...] = (),
                           log=print) -> tuple[int, float]:
    """Load ``state[name]`` into every object of ``stateful`` (modules, optimisers, the scaler, the EMA copy).

    Names in ``optional`` may be missing from ``state`` (a part switched on when the run was resumed, e.g. stage 1's
    segmentation discriminator): those objects keep their fresh initialisation, and ``log`` says so.
    Returns (step, elapsed seconds).
    """
    for name, obj in stateful.items():
        if obj is None:
            continue
        if name not in state and name in optional:
            log(f"note: the checkpoint holds no {name}; it starts fresh")
            continue
        obj.load_state_dict(state[name])
    return int(state["step"]), float(state["elapsed"])


def save_training_state(run: RunFolder, dist: Distributed, options: TrainOptions, step: int, elapsed: float,
                        stateful: dict[str, Any]) -> None:
    """Checkpoint ``stateful`` (name → object with ``state_dict``) plus step, time, options and every rank's RNG.

    Collective (all ranks call it); rank 0 writes the file atomically and prunes old ones.
    """
    rng = all_gather_objects(dist, capture_rng_state(dist.device))
    if dist.is_main:
        state = {"step": step, "elapsed": elapsed, "stage": options.stage,
                 "options": json.dumps(options_to_dict(options)), "rng": rng}
        state.update({name: obj.state_dict() for name, obj in stateful.items() if obj is not None})
        save_checkpoint(run.checkpoints, step, state, options.keep_last)
    barrier(dist)


# --------------------------------------------------------------------------------------------------------------
# Data: datasets, a resumable sampler, loaders
# --------------------------------------------------------------------------------------------------------------


def synthcity_folder_frames(folder: str) -> int:
    """Frames per clip of a pre-rendered SynthCity folder (from its ``meta.json``)."""
    meta = Path(folder) / "meta.json"
    if not meta.is_file():
        raise ValueError(f"{folder} is not a SynthCity dataset folder (no meta.json); write one with "
                         f"`python -m seg2vid.data.synthcity --out {folder}`")
    return int(json.loads(meta.read_text())["num_frames"])


def _stored_seeds(folder: Path, limit: int) -> list[int]:
    """The complete training clips (seed < HELDOUT_SEED_START) of a SynthCity folder, lowest seeds first."""
    from seg2vid.data.synthcity import HELDOUT_SEED_START
    from seg2vid.data.synthcity.writer import is_complete

    seeds = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    seeds = [s for s in seeds if s < HELDOUT_SEED_START and is_complete(folder, s)][:limit]
    if not seeds:
        raise ValueError(f"{folder} holds no complete SynthCity training clips")
    return seeds


def build_clip_dataset(options: TrainOptions, split: str, num_frames: int, num_clips: int | None = None) -> Dataset:
    """The clip dataset named by ``options.data`` for ``split`` ("train" or "val").

    Every item is a dict with ``video`` (num_frames, 3, H, W) in [-1, 1], ``labels`` (num_frames, H, W) trainIds,
    ``heatmaps`` (19, H, W) of frame 0 (see ``seg2vid.data``). SynthCity trains on seeds 0 … num_train_clips-1
    (rendered on the fly, or the complete clips of a pre-rendered folder); its "val" clips are held-out seeds
    (≥ ``HELDOUT_SEED_START``), always rendered on the fly. Raises ``ValueError`` for unusable data.
    """
    kind, _, path = options.data.partition(":")
    size = tuple(options.image_size)
    if kind == "synthcity":
        from seg2vid.data.dataset import HELDOUT_SEED_START, SynthCityDataset

        if split != "train":
            seeds = range(HELDOUT_SEED_START, HELDOUT_SEED_START + (num_clips or 64))
            return SynthCityDataset(None, seeds, size, num_frames, allow_heldout=True)
        if path:
            return SynthCityDataset(path, _stored_seeds(Path(path), num_clips or options.num_train_clips), size,
                                    num_frames)
        return SynthCityDataset(None, range(num_clips or options.num_train_clips), size, num_frames)
    from seg2vid.data.cityscapes import CityscapesSequenceDataset

    return CityscapesSequenceDataset(path, split, size, num_frames=num_frames, labels_root=options.labels_root or None)


def fixed_batch(dataset: Dataset, n: int, keys: tuple[str, ...] | None = None) -> dict:
    """The first ``n`` items of ``dataset`` (all of them if it is shorter), collated: the samples' inputs."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    if keys is not None:
        items = [{k: item[k] for k in keys} for item in items]
    return torch.utils.data.default_collate(items)


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose order is a pure function of ``(seed, epoch)`` and that can start mid-epoch.

    ``set_position(epoch, start)`` skips the first ``start`` indices of this rank's share of that epoch, so the
    batches after a resume are exactly those an uninterrupted run would have drawn next.
    """

    def __init__(self, dataset: Dataset, dist: Distributed, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a DataLoader worker from its torch seed (loader seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Dataset, options: TrainOptions, dist: Distributed) -> tuple[DataLoader, ResumableSampler]:
    sampler = ResumableSampler(dataset, dist, seed=options.seed)
    if sampler.num_samples < options.batch_size:
        raise OptionError(f"the training set has {len(dataset)} items, fewer than one batch per process "
                          f"({options.batch_size} × {dist.world_size} processes)")
    loader = DataLoader(
        dataset,
        batch_size=options.batch_size,
        sampler=sampler,
        num_workers=options.num_workers,
        pin_memory=dist.device.type == "cuda",
        drop_last=True,
        worker_init_fn=_seed_worker,
        generator=torch.Generator(),  # worker seeds come from here, not from the global RNG the model uses
        persistent_workers=options.num_workers > 0,
    )
    return loader, sampler


def batches_from(loader: DataLoader, sampler: ResumableSampler, step: int, seed: int) -> Iterator[dict]:
    """Endless batches starting at optimisation step ``step``: the data order is a function of (seed, step)."""
    per_epoch = sampler.num_samples // loader.batch_size
    epoch, offset = divmod(step, per_epoch)
    while True:
        sampler.set_position(epoch, offset * loader.batch_size)
        loader.generator.manual_seed(seed * 1_000_003 + epoch)
        yield from loader
        epoch, offset = epoch + 1, 0


# --------------------------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------------------------


class RunLogger:
    """``log.csv`` (always) and TensorBoard (when installed); rank 0 only.

    On resume the CSV keeps its rows up to the resumed step, so a run killed after its last checkpoint does not
    leave duplicate steps behind.
    """

    def __init__(self, run: RunFolder, enabled: bool, resume_step: int):
        self.enabled = enabled
        self.path = run.log_file
        self.fields: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
                fields = list(rows[0].keys()) if rows else None
            keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
            if fields is not None:
                self.fields = fields
                self._rewrite(keep)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run.root / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            self.tb = None

    def _rewrite(self, rows: list[dict]) -> None:
        def write(f):
            text = _csv_text(self.fields, rows)
            f.write(text.encode())

        atomic_write_bytes(self.path, write)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in values.items()}}
        new_file = self.fields is None
        if new_file:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if k not in ("time",):
                    self.tb.add_scalar(k, float(v), step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A (3, H, W) image in [0, 1] to TensorBoard (the PNG files are written by the scripts)."""
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, image, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _csv_text(fields: list[str], rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def say(dist: Distributed, message: str) -> None:
    """Print on rank 0 without breaking the progress bar."""
    if dist.is_main:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


def loud_warning(dist: Distributed, lines: list[str]) -> None:
    """A boxed multi-line warning on stderr (rank 0)."""
    if not dist.is_main:
        return
    width = max(len(line) for line in lines) + 4
    bar = "!" * width
    text = "\n".join([bar, *[f"! {line.ljust(width - 4)} !" for line in lines], bar])
    print(text, file=sys.stderr, flush=True)


def load_vgg(options: TrainOptions, dist: Distributed):
    """VGG-19 features for the perceptual loss, or None (loudly) when no local weights exist.

    Sets ``options.vgg`` to whether the loss actually runs, so ``options.json`` records it.
    """
    if not options.vgg:
        say(dist, "VGG perceptual loss: off (vgg=false)")
        return None
    from seg2vid.networks.vgg import VGGFeatures

    vgg = VGGFeatures.from_local(options.vgg_weights or None)
    if vgg is None:
        options.vgg = False
        loud_warning(dist, [
            "WARNING: training WITHOUT the VGG-19 perceptual loss.",
            "No VGG-19 weights were found in the torch cache (torchvision vgg19 IMAGENET1K_V1)",
            "and --vgg-weights was not given; they cannot be downloaded on this machine.",
            "The run continues with the other losses and records \"vgg\": false in options.json.",
            "To enable it: --vgg-weights /path/to/vgg19-dcbb9e9d.pth (torchvision state dict).",
        ])
        return None
    options.vgg = True
    vgg = vgg.to(dist.device).eval()
    vgg.requires_grad_(False)
    say(dist, "VGG perceptual loss: on")
    return vgg


def show_progress(args, dist: Distributed) -> bool:
    """A tqdm bar on rank 0 in an interactive terminal; plain log lines otherwise (e.g. under nohup)."""
    return dist.is_main and getattr(args, "progress", True) and sys.stderr.isatty()


def format_log_line(step: int, max_steps: int, values: dict[str, float], rate: float) -> str:
    terms = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    return f"step {step}/{max_steps} {terms} samples/s={rate:.2f}"


def clip_gradients(scaler: torch.amp.GradScaler, optimizer, module: torch.nn.Module, max_norm: float) -> None:
    """Clip the gradient norm (after unscaling fp16 gradients); no-op with ``max_norm`` = 0."""
    if max_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)


class Throughput:
    """Samples per second over the last logging window."""

    def __init__(self):
        self.t0, self.n = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.n += n

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        rate = self.n / dt if dt > 0 else math.nan
        self.t0, self.n = time.perf_counter(), 0
        return rate
