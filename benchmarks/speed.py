"""Speed of seg2vid: parameters, GFLOPs and latency per stage, compared with the original stage 2.

    python benchmarks/speed.py                            # randomly initialised default configuration, CPU
    python benchmarks/speed.py --checkpoint checkpoints   # a trained model (folder or Hub repo id)
    python benchmarks/speed.py --threads 2 --runs 20 --sizes 128x256 256x512

Prints Markdown tables:

* per stage: parameters and GFLOPs (counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and
  matrix products, 1 multiply-add = 2 FLOPs; grid sampling and element-wise ops are not counted);
* latency, median over ``--runs`` after ``--warmup`` runs, batch 1, through ``Seg2VidPipeline``:
  (a) label map → video with the stage-1 cache cleared before every run, (b) re-sampling z with the label map
  cached (only the flow decoder, warp and refiner run). On CUDA every run ends with a synchronisation.

The latency includes the conversion of the outputs to NumPy (frames, flows, occlusion maps) — what a user
of the pipeline waits for — but not video encoding.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seg2vid import Seg2VidPipeline, labels  # noqa: E402
from seg2vid.config import FlowPredictorConfig, ImageGeneratorConfig  # noqa: E402
from seg2vid.networks.flow_predictor import FlowPredictor  # noqa: E402
from seg2vid.networks.image_generator import ImageGenerator  # noqa: E402

# The original implementation's stage 2 (video generator) at 128×256, as measured on this machine.
ORIGINAL_STAGE2 = {"params_m": 59.0, "gflops": 450.0, "seconds_128x256": 5.6}


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are HxW, e.g. 128x256; got {text!r}") from None
    return h, w


def street_label_map(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A plausible (H, W) trainId map (sky, buildings, road, a few cars and people); content barely matters."""
    rng = np.random.default_rng(seed)
    h, w = size
    ids = np.full((h, w), labels.NAME_TO_ID["sky"], np.uint8)
    ids[h // 4 : h // 2] = labels.NAME_TO_ID["building"]
    ids[h // 2 :] = labels.NAME_TO_ID["road"]
    for _ in range(6):
        cls = int(rng.choice([labels.NAME_TO_ID["car"], labels.NAME_TO_ID["person"]]))
        y, x = int(rng.integers(h // 2, h - h // 8)), int(rng.integers(0, w - w // 8))
        ids[y : y + h // 8, x : x + w // 8] = cls
    return ids


def build_pipeline(checkpoint: str | None, device: str) -> Seg2VidPipeline:
    if checkpoint is not None:
        return Seg2VidPipeline.from_pretrained(checkpoint, device=device)
    torch.manual_seed(0)
    return Seg2VidPipeline(
        ImageGenerator(ImageGeneratorConfig()), FlowPredictor(FlowPredictorConfig()), device=device
    )


def used_parameters(model: torch.nn.Module, run) -> int:
    """Parameters of the sub-modules that ``run()`` actually calls (e.g. no motion encoder at inference)."""
    called: set[torch.nn.Module] = set()
    hooks = [m.register_forward_hook(lambda mod, *_: called.add(mod)) for m in model.modules()]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    params = {id(p): p for m in called for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in params.values())


def count_flops(run) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 1e9


def measure(run, runs: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def stage_costs(pipe: Seg2VidPipeline, size: tuple[int, int]) -> dict[str, tuple[int, float]]:
    """{part: (parameters used, GFLOPs)} for one batch-1 call of each part at ``size``."""
    device = pipe.device
    heatmaps = labels.one_hot(street_label_map(size), device=device).unsqueeze(0)  # (1, 19, H, W)
    ig, fp = pipe.image_generator, pipe.flow_predictor
    with torch.inference_mode():
        frame0 = ig(heatmaps)
        enc = fp.encode_image(frame0, heatmaps)
        z_fg, z_bg = fp.sample_z(1, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
        z_fg, z_bg = z_fg.to(device), z_bg.to(device)
        parts = {
            "stage 1: ImageGenerator": (ig, lambda: ig(heatmaps)),
            "stage 2: encode_image (once per label map)": (fp, lambda: fp.encode_image(frame0, heatmaps)),
            "stage 2: decode (per z: flow decoder, warp, refiner)": (fp, lambda: fp.decode(enc, z_fg, z_bg)),
            "stage 2 at inference (encode_image + decode)": (
                fp,
                lambda: fp.decode(fp.encode_image(frame0, heatmaps), z_fg, z_bg),
            ),
        }
        return {name: (used_parameters(m, run), count_flops(run)) for name, (m, run) in parts.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="pipeline folder or Hub repo id (default: random default configuration)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(128, 256), (256, 512)], metavar="HxW")
    parser.add_argument(
        "--devices", nargs="+", default=None, choices=["cpu", "cuda"], help="default: cpu, and cuda when available"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("CUDA is not available on this machine.")

    cpu_name = platform.processor() or platform.machine()
    print(f"# seg2vid speed — model: {args.checkpoint or 'default configuration, random weights (seed 0)'}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads of {os.cpu_count()} ({cpu_name})"
        + (f", GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else "")
        + f"; median of {args.runs} runs after {args.warmup} warm-up runs, batch 1\n"
    )

    # 1. Parameters and FLOPs (device-independent; counted on the CPU).
    pipe = build_pipeline(args.checkpoint, "cpu")
    total_stage2 = sum(p.numel() for p in pipe.flow_predictor.parameters())
    costs = {size: stage_costs(pipe, size) for size in args.sizes}
    size_names = [f"{h}×{w}" for h, w in args.sizes]
    inference = "stage 2 at inference (encode_image + decode)"

    def versus_original(params: float, gflops: float | None) -> str:
        text = f"{ORIGINAL_STAGE2['params_m'] * 1e6 / params:.0f}× fewer params"
        if gflops is not None:
            text += f", {ORIGINAL_STAGE2['gflops'] / gflops:.0f}× fewer FLOPs"
        return text

    at_128 = (128, 256) in costs
    print(
        "| part | params (M) | "
        + " | ".join(f"GFLOPs {s}" for s in size_names)
        + f" | vs original stage 2 ({ORIGINAL_STAGE2['params_m']:.0f} M, {ORIGINAL_STAGE2['gflops']:.0f} GFLOPs"
        " at 128×256) |"
    )
    print("|---|---:|" + "---:|" * len(args.sizes) + "---|")
    for name in costs[args.sizes[0]]:
        params = costs[args.sizes[0]][name][0]
        compare = versus_original(params, costs[(128, 256)][name][1] if at_128 else None) if name == inference else ""
        print(
            f"| {name} | {params / 1e6:.2f} | "
            + " | ".join(f"{costs[s][name][1]:.2f}" for s in args.sizes)
            + f" | {compare} |"
        )
    print(
        f"| stage 2, all parameters (the motion encoders serve training only) | {total_stage2 / 1e6:.2f} | "
        + " | ".join("" for _ in args.sizes)
        + f" | {versus_original(total_stage2, None)} |"
    )

    # 2. Latency through the pipeline.
    print(
        "\n| device | size | label map → video (ms) | re-sample z, map cached (ms) | original stage 2 (ms) "
        "| speed-up, re-sample vs original |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for device_name in devices:
        pipe = build_pipeline(args.checkpoint, device_name)
        device = pipe.device
        for size, size_name in zip(args.sizes, size_names):
            pipe.resolution = size
            ids = street_label_map(size)

            def full(i):
                pipe.clear_cache()
                pipe(ids, seed=i)

            def resample(i):
                pipe(ids, seed=i)

            full_ms = statistics.median(measure(full, args.runs, args.warmup, device)) * 1e3
            pipe(ids, seed=0)  # fill the cache
            resample_ms = statistics.median(measure(resample, args.runs, args.warmup, device)) * 1e3
            original_ms = ORIGINAL_STAGE2["seconds_128x256"] * 1e3 if size == (128, 256) else None
            compare = (
                (f"{original_ms:.0f}", f"{original_ms / resample_ms:.0f}×")
                if original_ms is not None and device.type == "cpu"
                else ("—", "—")
            )
            print(f"| {device_name} | {size_name} | {full_ms:.1f} | {resample_ms:.1f} | {compare[0]} | {compare[1]} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
