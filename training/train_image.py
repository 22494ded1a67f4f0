"""Stage 1 training: semantic label map → first frame I0 (paper section 3.1; pix2pixHD losses).

The generator G (``ImageGenerator``) and the multi-scale PatchGAN discriminator D (``MultiscaleDiscriminator``)
are trained in alternation with their own Adam optimisers:

    D step:  L_D = ½ [ gan(D(S, I), real) + gan(D(S, G(S)), fake) ]                 (LSGAN or hinge)
    G step:  L_G = λ_gan · gan(D(S, G(S)), real) + λ_fm · FM(D; G(S), I) + λ_vgg · VGG(G(S), I)
                   [+ λ_l1 · |G(S) − I|₁, pix2pix's term, off by default: ``--set loss.lambda_l1=10``;
                    ``loss.l1_class_balanced=true`` averages it per class of the label map instead of per pixel]
                   [+ λ_seg · CE_w(D_seg(G(S)), S), OASIS's term, off by default: ``--set loss.lambda_seg=1``]

With ``loss.lambda_seg > 0`` a second discriminator D_seg (``SegmentationDiscriminator``, OASIS) segments images
into the 19 classes plus "fake"; it learns L_Dseg = CE_w(D_seg(I), S) + CE(D_seg(G(S)), fake), and the generator
is asked for pixels that D_seg reads as their label-map class (CE_w: class-balanced cross-entropy). With
``loss.lambda_labelmix > 0`` D_seg also learns OASIS's LabelMix consistency, λ_lm · ‖D_seg(M·I + (1−M)·G(S)) −
(M·D_seg(I) + (1−M)·D_seg(G(S)))‖², M a random split of the label map's classes, which keeps it judging each
region by what is in it rather than by a "this whole frame is fake" cue.

Training pairs are (frame, its one-hot label map); any frame of a clip can serve (``frames_per_clip``).

    python training/train_image.py                                  # SynthCity 128×256 on the CPU; resumes
    python training/train_image.py --preset tiny --name smoke       # a few steps of tiny networks
    torchrun --nproc_per_node=8 training/train_image.py --preset cityscapes-128x256 --data cityscapes:/data/cs

Run folder ``runs/<name>/``: options.json, log.csv, samples/step-*.png (label | generated | real),
checkpoints/step-*.pt (resumed automatically). ``--export DIR`` writes the EMA generator as a stage folder.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from seg2vid import labels as label_ops
from seg2vid.config import DiscriminatorConfig, ImageGANLossWeights, ImageGeneratorConfig
from seg2vid.losses import (
    class_balanced_l1_loss,
    feature_matching_loss,
    gan_loss,
    l1_loss,
    label_mix,
    label_mix_consistency_loss,
    segmentation_adversarial_loss,
    vgg_loss,
)
from seg2vid.networks.discriminator import MultiscaleDiscriminator, SegmentationDiscriminator
from seg2vid.networks.image_generator import ImageGenerator
from training import common as C

STAGE = "image"


@dataclass
class ImageTrainOptions(C.TrainOptions):
    """Stage-1 options: the shared ones plus the discriminator and the pix2pixHD loss weights."""

    lr_d: float = 2e-4  # discriminator learning rate (the generator's is ``lr``)
    frames_per_clip: int = 1  # the first N frames of every clip are training images (each with its own labels)
    model: ImageGeneratorConfig = field(default_factory=ImageGeneratorConfig)
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: ImageGANLossWeights = field(default_factory=ImageGANLossWeights)


C.register_model_presets(STAGE, {
    "tiny": {"model.base_channels": 4, "model.num_downsample": 2, "model.num_res_blocks": 1,
             "model.max_channels": 16, "disc.base_channels": 4, "disc.num_layers": 2, "disc.num_scales": 2},
    "cityscapes-128x256": {"model.base_channels": 32, "model.max_channels": 512, "model.num_res_blocks": 9,
                           "disc.base_channels": 64, "disc.num_scales": 2},
    "cityscapes-256x512": {"model.base_channels": 32, "model.num_downsample": 4, "model.max_channels": 512,
                           "model.num_res_blocks": 9, "disc.base_channels": 64, "disc.num_scales": 3},
})


def check_options(options: ImageTrainOptions) -> None:
    if options.frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be at least 1; got {options.frames_per_clip}")
    if not options.lr_d > 0:
        raise ValueError(f"lr_d must be positive; got {options.lr_d}")


class LabelledFrames(Dataset):
    """Clips → (frame, label map) pairs: item ``i`` is frame ``i % F`` of clip ``i // F`` (F = frames per clip).

    Returns ``image`` (3, H, W) in [-1, 1], ``labels`` (H, W) trainIds and ``heatmaps`` (19, H, W) one-hot.
    """

    def __init__(self, clips: Dataset, frames_per_clip: int):
        self.clips, self.frames_per_clip = clips, frames_per_clip

    def __len__(self) -> int:
        return len(self.clips) * self.frames_per_clip

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index // self.frames_per_clip]
        t = index % self.frames_per_clip
        ids = clip["labels"][t]  # (H, W)
        return {"image": clip["video"][t], "labels": ids, "heatmaps": label_ops.one_hot(ids)}


def discriminate(disc, heatmaps, fake, real):
    """D on fake and real in one batch (instance norm is per sample) → (outputs on fake, outputs on real).

    Each is a list over scales of lists over layers; the last layer is the patch logits.
    """
    out = disc(torch.cat([heatmaps, heatmaps]), torch.cat([fake, real]))
    b = fake.shape[0]
    return [[f[:b] for f in scale] for scale in out], [[f[b:] for f in scale] for scale in out]


def segment(seg_disc, *images):
    """D_seg on several batches of frames at once (its batch norm then sees them all), e.g. (fake, real) →
    (logits on fake, logits on real), each (B, N + 1, H, W)."""
    return seg_disc(torch.cat(images)).split([x.shape[0] for x in images])


@torch.no_grad()
def write_samples(generator, batch: dict, path: Path) -> torch.Tensor:
    """label colours | generated | real, one row per held-out example → ``path`` (PNG). Returns the grid."""
    from torchvision.utils import make_grid, save_image

    device = next(generator.parameters()).device
    fake = generator(batch["heatmaps"].to(device)).float().cpu()  # (N, 3, H, W) in [-1, 1]
    colours = torch.from_numpy(label_ops.colorize(batch["labels"].numpy())).permute(0, 3, 1, 2).float() / 127.5 - 1
    tiles = torch.stack([colours, fake, batch["image"].float()], dim=1).flatten(0, 1)  # (3N, 3, H, W)
    grid = make_grid(tiles, nrow=3, padding=2, normalize=True, value_range=(-1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return grid


def main(argv: list[str] | None = None) -> Path:
    """Train stage 1; returns the run folder."""
    return C.run_script(STAGE, __doc__, ImageTrainOptions, check_options, train, argv)


def train(options: ImageTrainOptions, dist: C.Distributed, args, parser) -> Path:
    C.configure_torch(options, dist)

    # 1. Run folder: --fresh moves an old one aside; otherwise the newest checkpoint (if any) is resumed.
    run, resumed = C.open_run(options, dist, args.fresh)

    # 2. Networks (same initialisation on every rank), EMA copy, optimisers, VGG for the perceptual loss.
    C.seed_everything(options.seed)
    try:
        keep = C.cli_model_keys(parser, args)  # model.* options given with --set win over --init-from's config
        generator = C.prepare_module(C.build_stage_model(ImageGenerator, options, dist, "generator", keep), options, dist)
    except ValueError as e:  # --init-from: not a checkpoint folder, wrong class, corrupt weights
        parser.error(f"--init-from: {e}")
    disc = C.prepare_module(MultiscaleDiscriminator(options.disc), options, dist)
    seg_disc = (C.prepare_module(SegmentationDiscriminator(options.disc), options, dist)
                if options.loss.lambda_seg > 0 else None)
    ema = C.make_ema(generator) if options.ema_decay > 0 else None
    opt_g = torch.optim.Adam(generator.parameters(), lr=options.lr, betas=(options.beta1, options.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=options.lr_d, betas=(options.beta1, options.beta2))
    opt_s = (torch.optim.Adam(seg_disc.parameters(), lr=options.lr_d, betas=(options.beta1, options.beta2))
             if seg_disc is not None else None)
    discriminators = [d for d in (disc, seg_disc) if d is not None]
    d_optimisers = [o for o in (opt_d, opt_s) if o is not None]
    scaler = C.make_scaler(options, dist)
    try:
        vgg = C.load_vgg(options, dist)
    except ValueError as e:
        parser.error(f"--vgg-weights: {e}")
    stateful = {"model": generator, "model_ema": ema, "discriminator": disc, "optimizer": opt_g,
                "optimizer_d": opt_d, "seg_discriminator": seg_disc, "optimizer_seg": opt_s, "scaler": scaler}
    step, elapsed = (C.restore_training_state(resumed[0], stateful, ("seg_discriminator", "optimizer_seg"),
                                              lambda m: C.say(dist, m)) if resumed else (0, 0.0))
    if resumed:
        C.say(dist, f"resumed from {resumed[1]} at step {step}")
    g_train, d_train = C.wrap_module(generator, options, dist), C.wrap_module(disc, options, dist)
    s_train = C.wrap_module(seg_disc, options, dist) if seg_disc is not None else None

    # 3. Data: (frame, labels) pairs; a held-out batch for the sample grids.
    try:
        num_frames = max(2, options.frames_per_clip)
        kind, _, folder = options.data.partition(":")
        if kind == "synthcity" and folder:  # pre-rendered clips come with their own length
            num_frames = C.synthcity_folder_frames(folder)
            if options.frames_per_clip > num_frames:
                raise ValueError(f"frames_per_clip={options.frames_per_clip} exceeds the {num_frames} frames "
                                 f"per clip in {folder}")
        train_set = LabelledFrames(C.build_clip_dataset(options, "train", num_frames), options.frames_per_clip)
        loader, sampler = C.make_loader(train_set, options, dist)
        held_out = LabelledFrames(C.build_clip_dataset(options, "val", 2, options.num_samples), 1)
    except ValueError as e:
        parser.error(f"data: {e}")
    sample_batch = C.fixed_batch(held_out, options.num_samples)

    # 4. Book-keeping (rank 0): options.json records what actually runs (e.g. "vgg": false), log.csv, samples.
    if dist.is_main:
        C.write_json(run.options_file, C.options_to_dict(options))
    logger = C.RunLogger(run, dist.is_main, resume_step=step)
    C.seed_everything(options.seed + dist.rank)  # per-rank noise from here on
    if resumed:
        C.restore_rng_state(C.rng_state_for_rank(resumed[0], dist), dist.device)
    w = options.loss
    batches = C.batches_from(loader, sampler, step, options.seed)
    meter, t_start = C.Throughput(), time.perf_counter() - elapsed
    bar = tqdm(total=options.max_steps, initial=step, disable=not C.show_progress(args, dist), dynamic_ncols=True,
               desc=f"stage 1 {options.name}", unit="step")
    C.say(dist, f"run {run.root}: stage 1 on {options.data}, {options.image_size[0]}×{options.image_size[1]}, "
                f"batch {options.batch_size}×{dist.world_size}, device {dist.device}, steps {step}→{options.max_steps}")

    # 5. Training loop.
    while step < options.max_steps:
        batch = C.to_device_batch(next(batches), dist, options)
        heatmaps, real = batch["heatmaps"], batch["image"]  # (B, 19, H, W), (B, 3, H, W) in [-1, 1]
        labels = batch["labels"]  # (B, H, W) trainIds
        C.set_lr(opt_g, C.learning_rate(step, options.lr, options.max_steps, options.lr_decay_steps))
        for opt in d_optimisers:
            C.set_lr(opt, C.learning_rate(step, options.lr_d, options.max_steps, options.lr_decay_steps))

        # 5a. Discriminator step: real → real, G(S) (detached) → fake.
        with C.autocast(options, dist):
            fake = g_train(heatmaps)  # (B, 3, H, W)
            fake_d = fake.detach()  # what the discriminators learn from
            d_fake, d_real = discriminate(d_train, heatmaps, fake_d, real)
            loss_d_real = gan_loss(d_real, True, w.gan_mode, for_discriminator=True)
            loss_d_fake = gan_loss(d_fake, False, w.gan_mode, for_discriminator=True)
            loss_d = 0.5 * (loss_d_real + loss_d_fake)
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        C.clip_gradients(scaler, opt_d, disc, options.grad_clip)
        scaler.step(opt_d)
        loss_s = loss_s_real = loss_s_fake = loss_s_mix = real.new_zeros(())
        if seg_disc is not None:  # OASIS: real pixels → their class, generated pixels → "fake"
            with C.autocast(options, dist):
                if w.lambda_labelmix > 0:  # LabelMix: D_seg on a frame whose classes come half from each
                    mixed, mask = label_mix(labels, real, fake_d)
                    s_fake, s_real, s_mixed = segment(s_train, fake_d, real, mixed)
                    loss_s_mix = label_mix_consistency_loss(mask, s_mixed, s_fake, s_real)
                else:
                    s_fake, s_real = segment(s_train, fake_d, real)
                loss_s_real = segmentation_adversarial_loss(s_real, labels, True)
                loss_s_fake = segmentation_adversarial_loss(s_fake, labels, False)
                loss_s = loss_s_real + loss_s_fake + w.lambda_labelmix * loss_s_mix
            opt_s.zero_grad(set_to_none=True)
            scaler.scale(loss_s).backward()
            C.clip_gradients(scaler, opt_s, seg_disc, options.grad_clip)
            scaler.step(opt_s)

        # 5b. Generator step against the updated D (the bare modules: the Ds' weights get no gradient here).
        for d in discriminators:
            d.requires_grad_(False)
        with C.autocast(options, dist):
            g_fake, g_real = discriminate(disc, heatmaps, fake, real)
            loss_gan = gan_loss(g_fake, True, w.gan_mode, for_discriminator=False)
            loss_fm = feature_matching_loss(g_fake, [[f.detach() for f in scale] for scale in g_real])
            loss_vgg = vgg_loss(vgg, fake, real) if vgg is not None else fake.new_zeros(())
            loss_l1 = fake.new_zeros(())
            if w.lambda_l1 > 0:
                loss_l1 = (class_balanced_l1_loss(fake, real, labels, label_ops.NUM_CLASSES) if w.l1_class_balanced
                           else l1_loss(fake, real))
            loss_seg = (segmentation_adversarial_loss(segment(seg_disc, fake, real)[0], labels, True)
                        if seg_disc is not None else fake.new_zeros(()))
            loss_g = (w.lambda_gan * loss_gan + w.lambda_fm * loss_fm + w.lambda_vgg * loss_vgg + w.lambda_l1 * loss_l1
                      + w.lambda_seg * loss_seg)
        for d in discriminators:
            d.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        C.clip_gradients(scaler, opt_g, generator, options.grad_clip)
        scaler.step(opt_g)
        scaler.update()
        if ema is not None:
            C.update_ema(ema, generator, C.ema_decay_at(step, options.ema_decay))
        step += 1
        meter.add(options.batch_size * dist.world_size)
        bar.update(1)

        # 6. Logging, samples, checkpoints (rank 0 writes; every rank takes part in the collectives).
        if step % options.log_every == 0 or step == options.max_steps:
            terms = {"loss_g": loss_g, "g_gan": loss_gan, "g_fm": loss_fm, "g_vgg": loss_vgg, "g_l1": loss_l1,
                     "g_seg": loss_seg, "loss_d": loss_d, "d_real": loss_d_real, "d_fake": loss_d_fake,
                     "dseg_real": loss_s_real, "dseg_fake": loss_s_fake, "dseg_labelmix": loss_s_mix}
            values = C.mean_across_ranks(dist, {k: float(v.detach()) for k, v in terms.items()})
            rate = meter.rate()
            logger.log(step, {"time": time.perf_counter() - t_start, "samples_per_s": rate,
                              "lr": opt_g.param_groups[0]["lr"], **values})
            bar.set_postfix(loss_g=f"{values['loss_g']:.3f}", loss_d=f"{values['loss_d']:.3f}",
                            samples_s=f"{rate:.1f}")
            if bar.disable:
                C.say(dist, C.format_log_line(step, options.max_steps, values, rate))
        if dist.is_main and (step % options.sample_every == 0 or step == options.max_steps):
            grid = write_samples(ema if ema is not None else generator, sample_batch,
                                 run.samples / f"step-{step:08d}.png")
            logger.image("samples", grid, step)
        if step % options.ckpt_every == 0 or step == options.max_steps:
            C.save_training_state(run, dist, options, step, time.perf_counter() - t_start, stateful)
    bar.close()
    logger.close()

    # 7. Export the (EMA) generator as a stage folder.
    if args.export and dist.is_main:
        from training.export import export_run

        out = export_run(run.root, args.export)
        C.say(dist, f"exported the stage-1 generator to {out}")
    C.barrier(dist)
    return run.root


if __name__ == "__main__":
    main()
