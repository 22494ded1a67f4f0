"""Fit stage 2's sampling prior to the aggregate posterior of its training clips (after training, before shipping).

    python training/fit_prior.py --checkpoint checkpoints/ --data synthcity:data/synthcity-128x256 --clips 640

A cVAE samples z ~ N(0, I) at inference, but its posteriors Q(z | V, I0) are only pulled towards N(0, I) by the
β-weighted KL term (Eq. 7). With the paper's small β the *aggregate* posterior (the mixture of the posteriors of all
training clips) ends up far from N(0, I): on SynthCity, the codes of clips whose camera stands still lie several
standard deviations out along one direction, so N(0, I) never samples a still camera, and a few directions carry
most of the motion with a spread of 4–5 where N(0, I) offers 1. This script runs the motion encoders over
``--clips`` training clips and stores, per half of z, one of two fits in the stage folder ("ex-post density
estimation", Ghosh et al., ICLR 2020):

* ``--prior mixture`` (default): the aggregate posterior itself, (1/N) Σ_n N(mu_n, diag σ_n²) over the N clips
  (the prior a VAE would ideally have; Tomczak & Welling's VampPrior, AISTATS 2018, learns a mixture of this form).
  The config gets ``fitted_prior: true, prior_components: N``, the weights the buffers
  ``prior_{means,stds}_{fg,bg}`` (N, D): 5.2 MB for 640 clips. ``sample_z`` draws z = mu_n + σ_n ⊙ ε, n uniform.
* ``--prior gaussian``: one Gaussian with the mixture's moments (mean = E[mu], covariance = Cov(mu) + E[diag σ²]),
  the buffers ``prior_{mean,scale}_{fg,bg}``; ``sample_z`` draws z = m + L ε. It cannot keep motion modes apart:
  a still camera (one SynthCity clip in five) is blended into slow driving. On the 100 clips of
  ``benchmarks/quality.py`` the bundled stage 2's best-of-10 PSNR is 0.56 dB higher with the mixture (23.19
  against 22.63 dB; copying frame 0 gives 21.95).

``--neighbours K`` (mixture only) also stores where each clip's objects stand (``layout_descriptor`` of its first
label map, the buffer ``prior_layouts``, 2.6 MB for 640 clips) and sets ``prior_neighbours: K``: ``sample_z`` then
draws from the K clips whose layout is nearest the label map at hand, a nearest-neighbour estimate of p(z | S).
On SynthCity's validation clips (seeds 1 000 500 …, three draws of the codes) K = 128 of 640 raised the best-of-10
gain over copying the first frame from 1.86 to 2.30 dB, almost all of it on still-camera clips.

Either way ``sample_z`` maps the same ε as before, so seeds, the app's sliders and everything downstream keep
working (with ``--neighbours`` a seed's code also depends on the label map it is drawn for). Nothing else in the
network changes; refit after any further training.

The folder is rewritten whole (into a temporary sibling, then swapped in), so an interrupted run leaves the old
model intact.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from seg2vid.checkpoint import STAGE_FOLDERS, CheckpointError, read_stage_config, save_stage
from seg2vid.networks.flow_predictor import FlowPredictor, aggregate_posterior_gaussian, layout_descriptor
from training import common as C


def stage_folder(path: Path) -> Path:
    """The flow-predictor folder: ``path`` itself, or ``path/flow_predictor`` of a pipeline folder."""
    sub = path / STAGE_FOLDERS["FlowPredictor"]
    return sub if sub.is_dir() else path


@torch.no_grad()
def collect_posteriors(model: FlowPredictor, dataset, batch_size: int, progress: bool):
    """Run Q(z | V, I0) over ``dataset`` on the model's device: (mu_fg, logvar_fg, mu_bg, logvar_bg), each (N, D),
    and the clips' layouts (N, F) (:func:`layout_descriptor` of each first label map)."""
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    parts: list[list[torch.Tensor]] = [[], [], [], [], []]
    for batch in tqdm(loader, desc="posteriors", unit="batch", disable=not progress):
        # video (B, T+1, 3, H, W), heatmaps (B, 19, H, W)
        q = model.encode_motion(batch["video"].to(device), batch["heatmaps"].to(device))
        layouts = layout_descriptor(batch["heatmaps"])
        for store, value in zip(parts, (q.mu_fg, q.logvar_fg, q.mu_bg, q.logvar_bg, layouts)):
            store.append(value.float().cpu())
    return [torch.cat(p) for p in parts]


PRIORS = ("mixture", "gaussian")


def fit_prior(
    model: FlowPredictor,
    dataset,
    batch_size: int = 8,
    progress: bool = True,
    kind: str = "mixture",
    neighbours: int = 0,
) -> FlowPredictor:
    """A copy of ``model`` whose prior is fitted to the posteriors over ``dataset``: their mixture (``kind``
    ``"mixture"``) or the Gaussian with its moments (``"gaussian"``); a mixture with ``neighbours`` = K > 0 draws
    from the K clips whose layout is nearest the label map at hand."""
    if kind not in PRIORS:
        raise ValueError(f"kind must be one of {PRIORS}; got {kind!r}.")
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 0:
        raise ValueError(f"neighbours must be a non-negative integer; got {neighbours!r}.")
    if neighbours and kind != "mixture":
        raise ValueError("neighbours needs the mixture prior (kind='mixture').")
    if neighbours > len(dataset):
        raise ValueError(f"neighbours ({neighbours}) cannot exceed the number of clips ({len(dataset)}).")
    mu_fg, logvar_fg, mu_bg, logvar_bg, layouts = collect_posteriors(model.eval(), dataset, batch_size, progress)
    components = len(mu_fg) if kind == "mixture" else 0
    config = type(model.config).from_dict(
        {**model.config.to_dict(), "fitted_prior": True, "prior_components": components,
         "prior_neighbours": neighbours}
    )
    fitted = FlowPredictor(config)
    weights = {k: v.cpu() for k, v in model.state_dict().items() if not k.startswith("prior_")}
    missing, unexpected = fitted.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("prior_") for k in missing), (missing, unexpected)
    if kind == "mixture":
        std = lambda logvar: (0.5 * logvar).exp()  # noqa: E731
        fitted.set_prior_mixture(mu_fg, std(logvar_fg), mu_bg, std(logvar_bg), layouts if neighbours else None)
    else:
        fitted.set_prior(*aggregate_posterior_gaussian(mu_fg, logvar_fg),
                         *aggregate_posterior_gaussian(mu_bg, logvar_bg))
    return fitted.eval()


def describe(model: FlowPredictor) -> str:
    """Per half of z: the norm of the prior's mean and the standard deviations of its three widest directions."""
    lines = []
    mixture = model.config.prior_components
    for half, mean in zip(("fg", "bg"), model.prior_mean()):
        if mixture:  # the mixture's moments, as --prior gaussian would fit them
            means, stds = getattr(model, f"prior_means_{half}"), getattr(model, f"prior_stds_{half}")
            scale = aggregate_posterior_gaussian(means, 2 * stds.log())[1].double()
        else:
            scale = getattr(model, f"prior_scale_{half}").double()
        cov = scale @ scale.T
        stds = torch.linalg.eigvalsh(cov).clamp(min=0).sqrt().flip(0)
        widest = ", ".join(f"{float(s):.2f}" for s in stds[:3])
        lines.append(f"  z_{half} ({mean.numel()}): |mean| {float(mean.norm()):.2f}, widest std {widest} "
                     f"(N(0, I): 1.00), median {float(stds.median()):.2f}")
    return "\n".join(lines)


def write_in_place(model: FlowPredictor, folder: Path, metadata: dict) -> None:
    """Write the stage into a temporary sibling of ``folder``, then swap it in."""
    tmp = folder.with_name(f".{folder.name}.fitting-{time.time_ns()}")
    try:
        save_stage(model, tmp, metadata)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{time.time_ns()}")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a pipeline folder (e.g. checkpoints/) or its flow_predictor/ stage folder")
    p.add_argument("--data", required=True,
                   help="the training data: synthcity | synthcity:FOLDER | cityscapes:ROOT (never held-out seeds)")
    p.add_argument("--clips", type=int, default=512, help="training clips to encode (default: %(default)s)")
    p.add_argument("--prior", choices=PRIORS, default="mixture",
                   help="mixture: the clips' posteriors themselves; gaussian: one Gaussian with their moments "
                        "(default: %(default)s)")
    p.add_argument("--neighbours", type=int, default=0,
                   help="mixture only: draw from the K clips whose layout is nearest the label map at hand "
                        "(0: from all; the bundled model uses 128 of 640)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--out", type=Path, help="write the fitted stage folder here instead of updating --checkpoint")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.clips < 2:
        parser.error(f"--clips must be at least 2; got {args.clips}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.threads < 0:
        parser.error(f"--threads must not be negative; got {args.threads}")
    if args.neighbours < 0:
        parser.error(f"--neighbours must not be negative; got {args.neighbours}")
    if args.neighbours and args.prior != "mixture":
        parser.error("--neighbours needs --prior mixture")
    try:
        C.validate_data_spec(args.data)
        device = C.resolve_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)

    source = stage_folder(args.checkpoint)
    try:
        class_name, _, metadata = read_stage_config(source)
        if class_name != "FlowPredictor":
            raise CheckpointError(f"{source} holds a {class_name}, not a FlowPredictor (stage 2).")
        from training.export import load_stage_weights

        model = load_stage_weights(source, FlowPredictor)
        options = C.TrainOptions(data=args.data, image_size=tuple(model.config.image_size))
        dataset = C.build_clip_dataset(options, "train", model.config.num_frames + 1, num_clips=args.clips)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    if len(dataset) < 2:
        parser.error(f"{args.data} has {len(dataset)} training clip(s); at least 2 are needed")
    if args.neighbours > len(dataset):
        parser.error(f"--neighbours ({args.neighbours}) cannot exceed the {len(dataset)} clips")

    fitted = fit_prior(model.to(device), dataset, args.batch_size, args.progress, args.prior, args.neighbours)
    metadata = {**metadata, "prior": {"kind": args.prior, "data": args.data, "clips": len(dataset),
                                      "neighbours": args.neighbours}}
    out = args.out if args.out is not None else source
    write_in_place(fitted, out, metadata)
    print(f"fitted a {args.prior} z prior to {source} on {len(dataset)} clips of {args.data} → {out}\n"
          f"{describe(fitted)}")
    return out


if __name__ == "__main__":
    main()
