"""Export training runs to the seg2vid checkpoint format (and optionally push it to the Hugging Face Hub).

    python training/export.py --image-run runs/A --video-run runs/B --out checkpoints/
    python training/export.py --video-run runs/B --out checkpoints/          # replace stage 2 only
    python training/export.py --image-run runs/A --video-run runs/B --out export/ --push-to-hub user/seg2vid

Each run's newest checkpoint is read (EMA weights unless ``--no-ema``) and written as a stage folder
(``config.json`` + ``model.safetensors``) under ``OUT/image_generator`` or ``OUT/flow_predictor`` — the pipeline
layout of ``Seg2VidPipeline.save_pretrained``, so ``Seg2VidPipeline.from_pretrained(OUT)`` loads the result once
both stages are there. The training-state files are our own (``torch.load(..., weights_only=True)``); the export
holds no pickle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch import nn

from seg2vid.checkpoint import STAGE_FOLDERS, is_pipeline_folder, load_stage, save_stage
from training import common as C

STAGE_CLASSES = {"image": "ImageGenerator", "video": "FlowPredictor"}


def _model_class(name: str) -> type[nn.Module]:
    if name == "ImageGenerator":
        from seg2vid.networks.image_generator import ImageGenerator

        return ImageGenerator
    from seg2vid.networks.flow_predictor import FlowPredictor

    return FlowPredictor


def load_stage_weights(folder, model_class: type[nn.Module]) -> nn.Module:
    """A stage model from a stage folder, or from the matching sub-folder of a pipeline folder / Hub repo."""
    from seg2vid.checkpoint import resolve_pretrained

    folder = resolve_pretrained(folder)
    sub = folder / STAGE_FOLDERS[model_class.__name__]
    return load_stage(sub if sub.is_dir() else folder, model_class.__name__)


def load_run(run_dir, use_ema: bool = True, step: int | None = None) -> tuple[nn.Module, dict]:
    """The network of a training run's newest checkpoint (or of its checkpoint at ``step``) and its metadata.

    Raises ``ValueError`` when the folder holds no (loadable) checkpoint, or none of that step.
    """
    run = C.RunFolder(Path(run_dir))
    if step is None:
        latest = C.load_latest_checkpoint(run.checkpoints)
        if latest is None:
            raise ValueError(f"{run.root} holds no training checkpoint (expected {run.checkpoints}/step-*.pt)")
        state, path = latest
    else:
        found = dict(C.list_checkpoints(run.checkpoints))
        if step not in found:
            raise ValueError(f"{run.root} has no checkpoint of step {step}; it has steps "
                             f"{', '.join(map(str, found)) or 'none'}")
        path = found[step]
        try:
            state = C.load_checkpoint(path)
        except Exception as e:  # a damaged or foreign file
            raise ValueError(f"cannot load {path}: {type(e).__name__}: {e}") from None
    options = json.loads(state["options"])
    class_name = STAGE_CLASSES[options["stage"]]
    model_class = _model_class(class_name)
    model = model_class(model_class.config_class.from_dict(options["model"]))
    ema = use_ema and "model_ema" in state
    try:
        model.load_state_dict(state["model_ema" if ema else "model"])
    except RuntimeError as e:  # weights from a different architecture than its own stored options describe
        detail = str(e).strip().splitlines()
        raise ValueError(f"{path} does not match the {class_name} its options describe: "
                         f"{' '.join(line.strip() for line in detail[1:3])}") from None
    metadata = {
        "run": run.root.name,
        "checkpoint": path.name,
        "steps": int(state["step"]),
        "ema": ema,
        "preset": options.get("preset"),
        "data": options.get("data"),
        "image_size": options.get("image_size"),
        "batch_size": options.get("batch_size"),
        "vgg_loss": options.get("vgg"),
        "seed": options.get("seed"),
    }
    return model.eval(), metadata


def export_run(run_dir, out, use_ema: bool = True, step: int | None = None) -> Path:
    """Write a run's network to ``out/<stage folder>`` (``image_generator`` or ``flow_predictor``)."""
    model, metadata = load_run(run_dir, use_ema, step)
    return save_stage(model, Path(out) / STAGE_FOLDERS[type(model).__name__], metadata)


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload an export folder to a Hub model repo; raises ``RuntimeError`` with a clear message when offline."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError("cannot push to the Hugging Face Hub: HF_HUB_OFFLINE=1 is set (offline mode). Unset it "
                           "on a machine with internet access and run `huggingface-cli login` first.")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 allow_patterns=["*.json", "*.safetensors", "README.md"],
                                 commit_message="Upload seg2vid checkpoint")
    except Exception as e:  # connection errors, authentication, permissions: all end the same way for the user
        raise RuntimeError(f"cannot push to the Hugging Face Hub repo {repo_id!r}: {type(e).__name__}: {e} "
                           "(no internet connection, or not logged in: `huggingface-cli login`)") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-run", type=Path, help="a stage-1 run folder (runs/<name>)")
    p.add_argument("--video-run", type=Path, help="a stage-2 run folder (runs/<name>)")
    p.add_argument("--out", type=Path, required=True, help="the pipeline folder to write (e.g. checkpoints/)")
    p.add_argument("--image-step", type=int, metavar="N",
                   help="export the stage-1 run's checkpoint of step N (default: the newest)")
    p.add_argument("--video-step", type=int, metavar="N",
                   help="export the stage-2 run's checkpoint of step N (default: the newest)")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="export the raw weights, not the EMA")
    p.add_argument("--model-card", type=Path, help="a Markdown file to write as OUT/README.md")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload OUT to this Hugging Face Hub model repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return p


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    args = parser.parse_args(argv)
    runs = {"image": args.image_run, "video": args.video_run}
    steps = {"image": args.image_step, "video": args.video_step}
    for stage, step in steps.items():
        if step is not None and runs[stage] is None:
            parser.error(f"--{stage}-step needs --{stage}-run")
    if not any(runs.values()) and not args.push_to_hub:
        parser.error("give --image-run and/or --video-run (or --push-to-hub to upload an existing export)")
    for stage, run in runs.items():
        if run is not None and not (run / "checkpoints").is_dir():
            parser.error(f"--{stage}-run {run}: not a training run folder (no checkpoints/ inside)")
    if args.model_card is not None and not args.model_card.is_file():
        parser.error(f"--model-card: no such file: {args.model_card}")

    for stage, run in runs.items():
        if run is None:
            continue
        try:
            folder = export_run(run, args.out, args.ema, steps[stage])
        except ValueError as e:
            parser.error(str(e))
        print(f"{STAGE_CLASSES[stage]}: {run} → {folder}")
    if args.model_card is not None:
        (args.out / "README.md").write_text(args.model_card.read_text())
    if not is_pipeline_folder(args.out):
        print(f"note: {args.out} does not hold both stages yet; export the other run into it too.")
    if args.push_to_hub:
        if not is_pipeline_folder(args.out):
            parser.error(f"--push-to-hub: {args.out} is not a complete pipeline folder (both stages)")
        try:
            url = push_to_hub(args.out, args.push_to_hub, args.private)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"pushed {args.out} to {url}")
    return args.out


if __name__ == "__main__":
    main()
