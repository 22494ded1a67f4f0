"""Stage 2 training: the cVAE that animates a first frame (paper sections 3.2–3.3, loss Eq. 3–7).

Every step takes (T+1)-frame windows V = [I0, I1 … IT] with the label map S of frame 0. The motion encoders
Q(z | V, I0) give the posterior over z = [z_FG, z_BG]; a reparameterised sample is decoded into bidirectional
flows W^f, W^b and occlusion maps O^f, O^b, the **true** first frame I0 is warped and refined (Eq. 2), and

    L_cVAE = λ_r L_r + λ_fs L_fs + λ_fc L_fc + L_l1 + λ_vgg L_vgg + λ_p (|1 − O^b| + |1 − O^f|) + β KL    (Eq. 7)

is minimised with Adam (``seg2vid.losses.cvae_loss``). At inference z is drawn from the prior N(0, I).

    python training/train_video.py                                  # SynthCity 128×256 on the CPU; resumes
    python training/train_video.py --preset tiny --name smoke       # a few steps of tiny networks
    torchrun --nproc_per_node=8 training/train_video.py --preset cityscapes-128x256 --data cityscapes:/data/cs

Run folder ``runs/<name>/``: options.json, log.csv, samples/step-*.gif (real | sampled from the prior | backward
flow) and step-*.png (frame strips), checkpoints/step-*.pt (resumed automatically). ``--export DIR`` writes the
EMA flow predictor as a stage folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from seg2vid.config import FlowPredictorConfig, LossWeights
from seg2vid.losses import cvae_loss, supervised_flow_loss
from seg2vid.networks.flow_predictor import FlowPredictor
from training import common as C

STAGE = "video"


@dataclass
class VideoTrainOptions(C.TrainOptions):
    """Stage-2 options: the shared ones plus the cVAE loss weights (paper defaults) and the network config."""

    lr: float = 1e-4
    beta1: float = 0.9
    # Not in the paper (which learns flow unsupervised): weight of an end-point-error term against ground-truth
    # flow, for data that has it (SynthCity); 0 = off.
    lambda_flow_supervised: float = 0.0
    model: FlowPredictorConfig = field(default_factory=FlowPredictorConfig)
    loss: LossWeights = field(default_factory=LossWeights)


# Model sizes per preset (``model.*`` overrides of FlowPredictorConfig; synthcity-128x256 keeps its defaults).
_PAPER_WIDTHS = {"model.encoder_stem_channels": 32, "model.encoder_channels": (48, 64, 128, 192),
                 "model.motion_channels": (32, 64, 128, 192, 256), "model.decoder_channels": (192, 96, 64, 32),
                 "model.refiner_channels": (24, 48, 96)}
C.register_model_presets(STAGE, {
    "tiny": {"model.z_fg_dim": 8, "model.z_bg_dim": 4, "model.encoder_stem_channels": 4,
             "model.encoder_channels": (4, 8), "model.motion_channels": (4, 8, 8), "model.motion_pool_size": (1, 2),
             "model.decoder_channels": (8, 4), "model.decoder_full_3d_levels": 1, "model.refiner_channels": (4, 8)},
    "cityscapes-128x256": _PAPER_WIDTHS,
    "cityscapes-256x512": _PAPER_WIDTHS,
    # The bundled model: layered flow (each half of z moves only its own layer; config.py), and after
    # fit_prior.py both halves drawn from one training clip.
    "synthcity-128x256": {"model.layered_flow": True, "model.joint_prior": True},
})


def check_options(options: VideoTrainOptions) -> None:
    if options.lambda_flow_supervised < 0:
        raise ValueError(f"lambda_flow_supervised must not be negative; got {options.lambda_flow_supervised}")
    if options.lambda_flow_supervised > 0 and not options.data.startswith("synthcity"):
        raise ValueError("lambda_flow_supervised needs ground-truth flow, which only SynthCity data has")


def flow_supervision(prediction, batch: dict) -> torch.Tensor:
    """End-point error of both predicted flows against SynthCity's, on pixels that have a correspondence."""
    return (supervised_flow_loss(prediction.flow_fwd.float(), batch["flow_fwd"], batch["occ_fwd"])
            + supervised_flow_loss(prediction.flow_bwd.float(), batch["flow_bwd"], batch["occ_bwd"]))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] → (..., 3, H, W) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def write_samples(model: FlowPredictor, batch: dict, seed: int, stem: Path) -> torch.Tensor:
    """Held-out clips animated from their true first frame with z from the prior (fixed per run).

    Writes ``stem.gif`` — per example a row [real | generated | backward-flow colour], animated over t — and
    ``stem.png``, the generated frames as strips (one row per example). Returns the PNG grid as (3, H, W) in [0, 1].
    """
    from torchvision.utils import flow_to_image, make_grid, save_image

    device = next(model.parameters()).device
    video, heatmaps = batch["video"].to(device), batch["heatmaps"].to(device)  # (N, T+1, 3, H, W), (N, 19, H, W)
    n = video.shape[0]
    z_fg, z_bg = model.sample_z(n, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))
    pred = model.decode(model.encode_image(video[:, 0], heatmaps), z_fg.to(device), z_bg.to(device))
    generated = torch.cat([video[:, :1], pred.frames], dim=1).cpu()  # (N, T+1, 3, H, W): I0, Î1 … ÎT
    flow = torch.cat([torch.zeros_like(pred.flow_bwd[:, :1]), pred.flow_bwd], dim=1).cpu()  # (N, T+1, 2, H, W)
    flow_rgb = flow_to_image(flow.flatten(0, 1).float()).view(*flow.shape[:2], 3, *flow.shape[-2:])

    columns = torch.stack([to_uint8(video.cpu()), to_uint8(generated), flow_rgb], dim=2)  # (N, T+1, 3, 3, H, W)
    frames = [make_grid(columns[:, t].flatten(0, 1), nrow=3, padding=2).permute(1, 2, 0).numpy()
              for t in range(columns.shape[1])]  # (H', W', 3) uint8 per t
    stem.parent.mkdir(parents=True, exist_ok=True)
    try:
        from seg2vid.video import write_gif

        write_gif(frames, stem.with_suffix(".gif"), fps=4)
    except ImportError:  # no video writer: the PNG strip below still shows every frame
        pass
    grid = make_grid(generated.flatten(0, 1), nrow=generated.shape[1], padding=2, normalize=True,
                     value_range=(-1, 1))
    save_image(grid, stem.with_suffix(".png"))
    return grid


def main(argv: list[str] | None = None) -> Path:
    """Train stage 2; returns the run folder."""
    return C.run_script(STAGE, __doc__, VideoTrainOptions, check_options, train, argv)


def train(options: VideoTrainOptions, dist: C.Distributed, args, parser) -> Path:
    C.configure_torch(options, dist)

    # 1. Run folder: --fresh moves an old one aside; otherwise the newest checkpoint (if any) is resumed.
    run, resumed = C.open_run(options, dist, args.fresh)

    # 2. Network (same initialisation on every rank), EMA copy, optimiser, VGG for the perceptual term.
    C.seed_everything(options.seed)
    try:
        keep = C.cli_model_keys(parser, args)  # model.* options given with --set win over --init-from's config
        model = C.prepare_module(C.build_stage_model(FlowPredictor, options, dist, "flow predictor", keep), options, dist)
    except ValueError as e:  # --init-from: not a checkpoint folder, wrong class, corrupt weights
        parser.error(f"--init-from: {e}")
    ema = C.make_ema(model) if options.ema_decay > 0 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, betas=(options.beta1, options.beta2))
    scaler = C.make_scaler(options, dist)
    try:
        vgg = C.load_vgg(options, dist)
    except ValueError as e:
        parser.error(f"--vgg-weights: {e}")

    stateful = {"model": model, "model_ema": ema, "optimizer": optimizer, "scaler": scaler}
    step, elapsed = C.restore_training_state(resumed[0], stateful) if resumed else (0, 0.0)
    if resumed:
        C.say(dist, f"resumed from {resumed[1]} at step {step}")
    model_train = C.wrap_module(model, options, dist)

    # 3. Data: (T+1)-frame windows with frame 0's label map; held-out clips for the sample videos.
    num_frames = options.model.num_frames + 1
    try:
        loader, sampler = C.make_loader(C.build_clip_dataset(options, "train", num_frames), options, dist)
        held_out = C.build_clip_dataset(options, "val", num_frames, options.num_samples)
    except ValueError as e:
        parser.error(f"data: {e}")
    sample_batch = C.fixed_batch(held_out, options.num_samples, keys=("video", "heatmaps"))

    # 4. Book-keeping (rank 0): options.json records what actually runs (e.g. "vgg": false), log.csv, samples.
    if dist.is_main:
        C.write_json(run.options_file, C.options_to_dict(options))
    logger = C.RunLogger(run, dist.is_main, resume_step=step)
    C.seed_everything(options.seed + dist.rank)  # per-rank noise (the reparameterised z) from here on
    if resumed:
        C.restore_rng_state(C.rng_state_for_rank(resumed[0], dist), dist.device)
    batches = C.batches_from(loader, sampler, step, options.seed)
    meter, t_start = C.Throughput(), time.perf_counter() - elapsed
    bar = tqdm(total=options.max_steps, initial=step, disable=not C.show_progress(args, dist), dynamic_ncols=True,
               desc=f"stage 2 {options.name}", unit="step")
    C.say(dist, f"run {run.root}: stage 2 on {options.data}, {options.image_size[0]}×{options.image_size[1]}, "
                f"{num_frames} frames, batch {options.batch_size}×{dist.world_size}, device {dist.device}, "
                f"steps {step}→{options.max_steps}")

    # 5. Training loop.
    while step < options.max_steps:
        batch = C.to_device_batch(next(batches), dist, options)
        video, heatmaps = batch["video"], batch["heatmaps"]  # (B, T+1, 3, H, W) in [-1, 1], (B, 19, H, W)
        C.set_lr(optimizer, C.learning_rate(step, options.lr, options.max_steps, options.lr_decay_steps))
        with C.autocast(options, dist):
            prediction = model_train(video, heatmaps)  # posterior sample z → flows, occlusions, frames
            loss, terms = cvae_loss(prediction, video, options.loss, vgg)  # Eq. 7
            if options.lambda_flow_supervised > 0:
                terms["flow_supervised"] = flow_supervision(prediction, batch)
                loss = loss + options.lambda_flow_supervised * terms["flow_supervised"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        C.clip_gradients(scaler, optimizer, model, options.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            C.update_ema(ema, model, C.ema_decay_at(step, options.ema_decay))
        step += 1
        meter.add(options.batch_size * dist.world_size)
        bar.update(1)

        # 6. Logging, samples, checkpoints (rank 0 writes; every rank takes part in the collectives).
        if step % options.log_every == 0 or step == options.max_steps:
            values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
            values = C.mean_across_ranks(dist, values)
            rate = meter.rate()
            logger.log(step, {"time": time.perf_counter() - t_start, "samples_per_s": rate,
                              "lr": optimizer.param_groups[0]["lr"], **values})
            bar.set_postfix(loss=f"{values['loss']:.3f}", samples_s=f"{rate:.1f}")
            if bar.disable:
                C.say(dist, C.format_log_line(step, options.max_steps, values, rate))
        if dist.is_main and (step % options.sample_every == 0 or step == options.max_steps):
            grid = write_samples(ema if ema is not None else model, sample_batch, options.seed,
                                 run.samples / f"step-{step:08d}")
            logger.image("samples", grid, step)
        if step % options.ckpt_every == 0 or step == options.max_steps:
            C.save_training_state(run, dist, options, step, time.perf_counter() - t_start, stateful)
    bar.close()
    logger.close()

    # 7. Export the (EMA) flow predictor as a stage folder.
    if args.export and dist.is_main:
        from training.export import export_run

        out = export_run(run.root, args.export)
        C.say(dist, f"exported the stage-2 flow predictor to {out}")
    C.barrier(dist)
    return run.root


if __name__ == "__main__":
    main()
