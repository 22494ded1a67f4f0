"""Checkpoint I/O: one folder per stage, ``config.json`` + ``model.safetensors``, strict loading, no pickle.

Layout::

    pipeline_folder/
        README.md                   optional model card
        image_generator/            stage 1
            config.json             {"class": "ImageGenerator", "format_version": 1, "config": {...},
            model.safetensors        "metadata": {...}}   (metadata optional: training steps, data, ...)
        flow_predictor/             stage 2
            config.json             {"class": "FlowPredictor", ...}
            model.safetensors

Loading is strict: every tensor the model expects must be in the file with the same shape, and nothing else may
be. Every failure is a ``CheckpointError`` (a ``ValueError``) whose message names the folder and what is wrong.
Writes are atomic per file (temporary file in the same folder, then ``os.replace``), weights first and
``config.json`` last, so a folder with a ``config.json`` never holds half-written weights.

A Hugging Face Hub repo id works wherever a folder does (``resolve_pretrained``); downloads honour
``HF_HUB_OFFLINE=1`` (then only the local cache is used).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "MODEL_CARD_NAME",
    "STAGE_FOLDERS",
    "save_stage",
    "load_stage",
    "read_stage_config",
    "save_pipeline",
    "load_pipeline",
    "resolve_pretrained",
    "is_pipeline_folder",
]

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
# Stage class name → sub-folder of a pipeline folder.
STAGE_FOLDERS: dict[str, str] = {"ImageGenerator": "image_generator", "FlowPredictor": "flow_predictor"}
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", MODEL_CARD_NAME]

# "name" or "namespace/name" as the Hub spells repo ids (letters, digits, "-", "_", "."; at most 96 characters).
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]{0,95}/)?[A-Za-z0-9][\w.\-]{0,95}$")
_MAX_LISTED_KEYS = 5


class CheckpointError(ValueError):
    """A checkpoint folder (or Hub repo) is missing, incomplete, corrupt or does not match its model class."""


def _model_classes() -> dict[str, type[nn.Module]]:
    # Imported lazily: the networks pull in more than checkpoint reading needs.
    from .networks.flow_predictor import FlowPredictor
    from .networks.image_generator import ImageGenerator

    return {"ImageGenerator": ImageGenerator, "FlowPredictor": FlowPredictor}


def _listing(keys, limit: int = _MAX_LISTED_KEYS) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown} … ({len(keys)} in all)" if len(keys) > limit else shown


# ----------------------------------------------------------------------------------------------------------------
# Atomic file writes


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same folder (same file system, so os.replace is atomic); created by ``write`` with the
    # usual permissions.
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


# ----------------------------------------------------------------------------------------------------------------
# One stage


def save_stage(model: nn.Module, folder, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an ``ImageGenerator`` or ``FlowPredictor``) to ``folder``; returns the folder.

    ``metadata`` (JSON-serialisable: training steps, data set, …) is stored next to the config and ignored when
    loading. Tensors are saved as they are (dtype kept) on the CPU.
    """
    from safetensors.torch import save_file

    class_name = type(model).__name__
    if class_name not in STAGE_FOLDERS:
        raise CheckpointError(f"Cannot save a {class_name}: expected one of {', '.join(STAGE_FOLDERS)}.")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise CheckpointError(f"{class_name} has no .config with to_dict(); cannot write config.json.")
    record = {"class": class_name, "format_version": FORMAT_VERSION, "config": config.to_dict()}
    if metadata:
        record["metadata"] = metadata
    try:
        config_text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    except TypeError as e:
        raise CheckpointError(f"The config or metadata of {class_name} is not JSON-serialisable ({e}).") from None

    # Clone so that tied / shared tensors become separate entries (safetensors refuses shared storage).
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    folder = Path(folder)
    atomic_write(
        folder / WEIGHTS_NAME,
        lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", "class": class_name}),
    )
    _write_text(folder / CONFIG_NAME, config_text)
    return folder


def read_stage_config(folder) -> tuple[str, Any, dict[str, Any]]:
    """Read ``folder/config.json`` → (class name, validated config object, metadata). Raises ``CheckpointError``."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise CheckpointError(f"No checkpoint folder at {str(folder)!r}.")
    if not path.is_file():
        raise CheckpointError(f"{str(folder)!r} holds no {CONFIG_NAME}; it is not a seg2vid stage checkpoint.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({e}).") from None
    if not isinstance(record, dict) or not {"class", "config"} <= record.keys():
        raise CheckpointError(f"{str(path)!r} must be a JSON object with keys 'class' and 'config'.")
    version = record.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format_version {version!r}; this seg2vid reads version {FORMAT_VERSION}. "
            "Upgrade seg2vid to load it."
        )
    class_name = record["class"]
    classes = _model_classes()
    if class_name not in classes:
        raise CheckpointError(
            f"{str(path)!r} names class {class_name!r}; expected one of {', '.join(sorted(classes))}."
        )
    config_class = classes[class_name].config_class
    if not isinstance(record["config"], dict):
        raise CheckpointError(f"'config' in {str(path)!r} must be a JSON object.")
    try:
        config = config_class.from_dict(record["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"Invalid {config_class.__name__} in {str(path)!r}: {e}") from None
    metadata = record.get("metadata") or {}
    return class_name, config, metadata


def _check_state_dict(model: nn.Module, loaded: dict[str, torch.Tensor], where: str) -> None:
    expected = model.state_dict()
    missing = expected.keys() - loaded.keys()
    unexpected = loaded.keys() - expected.keys()
    shapes = [
        f"{k} {tuple(loaded[k].shape)} in the file vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in loaded and loaded[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(unexpected)}")
    if shapes:
        more = f" … ({len(shapes)} in all)" if len(shapes) > _MAX_LISTED_KEYS else ""
        problems.append("shape mismatches: " + "; ".join(shapes[:_MAX_LISTED_KEYS]) + more)
    if problems:
        raise CheckpointError(
            f"The weights in {where} do not match the {type(model).__name__} described by its {CONFIG_NAME} — "
            + "; ".join(problems)
            + "."
        )


def load_stage(folder, expected_class: str | type | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model described by ``folder/config.json`` and load ``folder/model.safetensors`` strictly.

    ``expected_class`` (a class or its name) guards against loading, say, a flow predictor where an image
    generator is wanted. The model is returned in ``eval()`` mode on ``device``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    class_name, config, _ = read_stage_config(folder)
    if expected_class is not None:
        wanted = expected_class if isinstance(expected_class, str) else expected_class.__name__
        if class_name != wanted:
            raise CheckpointError(f"{str(folder)!r} holds weights of class {class_name}, but {wanted} was expected.")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{str(folder)!r} has a {CONFIG_NAME} but no {WEIGHTS_NAME}.")
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(weights)!r} is corrupt or truncated ({e}).") from None

    model = _model_classes()[class_name](config)
    _check_state_dict(model, state, repr(str(weights)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied; the checks above catch the usual cases
        raise CheckpointError(f"Could not load {str(weights)!r}: {e}") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# A pipeline folder (both stages) and the Hub


def is_pipeline_folder(folder) -> bool:
    folder = Path(folder)
    return all((folder / sub / CONFIG_NAME).is_file() for sub in STAGE_FOLDERS.values())


def save_pipeline(
    image_generator: nn.Module,
    flow_predictor: nn.Module,
    folder,
    metadata: dict[str, dict[str, Any]] | None = None,
    model_card: str | None = None,
) -> Path:
    """Write both stages to ``folder/image_generator`` and ``folder/flow_predictor`` (+ ``README.md`` if given).

    ``metadata`` maps a stage class name (``"ImageGenerator"`` / ``"FlowPredictor"``) to that stage's metadata.
    """
    folder = Path(folder)
    metadata = metadata or {}
    for model in (image_generator, flow_predictor):
        name = type(model).__name__
        if name not in STAGE_FOLDERS:
            raise CheckpointError(f"Cannot save a {name} as a pipeline stage.")
        save_stage(model, folder / STAGE_FOLDERS[name], metadata.get(name))
    if model_card is not None:
        _write_text(folder / MODEL_CARD_NAME, model_card)
    return folder


def load_pipeline(name_or_path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module]:
    """Load (image_generator, flow_predictor) from a pipeline folder or Hub repo id."""
    folder = resolve_pretrained(name_or_path)
    missing = [sub for sub in STAGE_FOLDERS.values() if not (folder / sub).is_dir()]
    if missing:
        raise CheckpointError(
            f"{str(name_or_path)!r} is not a seg2vid pipeline checkpoint: it lacks the sub-folder(s) "
            f"{', '.join(missing)}/ (expected {' and '.join(f'{s}/' for s in STAGE_FOLDERS.values())})."
        )
    image_generator = load_stage(folder / STAGE_FOLDERS["ImageGenerator"], "ImageGenerator", device)
    flow_predictor = load_stage(folder / STAGE_FOLDERS["FlowPredictor"], "FlowPredictor", device)
    return image_generator, flow_predictor


def looks_like_repo_id(name: str) -> bool:
    """True for ``"name"`` or ``"namespace/name"`` in Hub spelling (no path separators beyond one ``/``)."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def resolve_pretrained(name_or_path, revision: str | None = None) -> Path:
    """A local folder → itself; otherwise a Hub repo id → its local snapshot (downloaded unless offline).

    Only ``*.json``, ``*.safetensors`` and ``README.md`` are fetched. With ``HF_HUB_OFFLINE=1`` only the local
    Hugging Face cache is consulted. Raises ``CheckpointError`` when neither works.
    """
    if name_or_path is None:
        raise CheckpointError("No checkpoint given.")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{str(name_or_path)!r} is a file; a checkpoint is a folder (or a Hub repo id).")
    name = os.fspath(name_or_path)
    if not looks_like_repo_id(name):
        raise CheckpointError(f"No checkpoint folder at {name!r} (and it is not a Hugging Face Hub repo id).")

    import huggingface_hub
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import errors as hub_errors

    offline = hub_constants.HF_HUB_OFFLINE
    try:
        snapshot = huggingface_hub.snapshot_download(name, revision=revision, allow_patterns=HUB_ALLOW_PATTERNS)
    except hub_errors.LocalEntryNotFoundError:
        why = (
            "HF_HUB_OFFLINE=1 is set and the repo is not in the local Hugging Face cache"
            if offline
            else "it could not be downloaded (no connection?) and is not in the local Hugging Face cache"
        )
        raise CheckpointError(
            f"No checkpoint folder at {name!r}, and the Hub repo {name!r} is unavailable: {why}."
        ) from None
    except hub_errors.RepositoryNotFoundError:
        raise CheckpointError(
            f"No checkpoint folder at {name!r}, and no Hugging Face Hub repo {name!r} exists (or it is private)."
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise CheckpointError(f"The Hub repo {name!r} has no revision {revision!r}.") from None
    except (hub_errors.HFValidationError, hub_errors.HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"Could not fetch the Hub repo {name!r}: {e}") from None
    return Path(snapshot)
