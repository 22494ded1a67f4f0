"""Command line: ``python -m seg2vid generate LABEL -o video.mp4`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

_EPILOG = """\
LABEL may be:
  * a colour label image (PNG) in the official Cityscapes colours — each pixel is snapped to the nearest of the
    19 class colours, black = unlabeled;
  * a grayscale PNG of Cityscapes trainIds (0-18, 255 = ignore) or labelIds (0-33, as in *_labelIds.png).
  It is resized (nearest) to the model resolution, 128x256 for the bundled model.

outputs:
  -o OUT.mp4    H.264 mp4 (yuv420p, plays in browsers); OUT.gif writes a looping GIF instead
  --gif         also write a GIF next to the mp4 (same name, .gif)
  --frames-dir  also write every frame as a PNG (frame_00.png = the first frame)

examples:
  python -m seg2vid generate assets/examples/street.png -o street.mp4
  python -m seg2vid generate street.png -o street.mp4 --gif --seed 3 --scale 2
  python -m seg2vid generate street_labelIds.png -o v.mp4 --first-frame street.jpg   # animate a real photo
  python -m seg2vid generate street.png -o v.mp4 --checkpoint runs/stage2/export --device cuda
  python -m seg2vid generate street.png -o v.mp4 --checkpoint user/seg2vid-synthcity   # Hugging Face Hub repo
"""


class _UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seg2vid",
        description="seg2vid: generate a short video (first frame + 8 predicted frames) from one semantic label map.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    gen = commands.add_parser(
        "generate",
        help="label map → video (mp4 / gif / PNG frames)",
        description="Generate a video from a Cityscapes label map: stage 1 paints the first frame, stage 2 predicts "
        "optical flow for the next 8 frames, warps and refines them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("label", metavar="LABEL", help="label-map image: Cityscapes colours, trainIds or labelIds")
    gen.add_argument("-o", "--output", required=True, type=Path, help="output video, .mp4 or .gif")
    gen.add_argument("--gif", action="store_true", help="also write a GIF next to an mp4 output")
    gen.add_argument("--frames-dir", type=Path, metavar="DIR", help="also write every frame as a PNG into DIR")
    gen.add_argument("--seed", type=int, default=0, help="seed of the motion codes z (default: 0)")
    gen.add_argument(
        "--motion-scale", type=float, default=1.0, metavar="X",
        help="multiply the predicted motion (0 = still, 1 = as predicted; default: 1)",
    )
    gen.add_argument(
        "--first-frame", metavar="IMAGE",
        help="animate this real frame instead of generating one (stage 2 only); LABEL must be its label map",
    )
    gen.add_argument(
        "--checkpoint", metavar="DIR_OR_REPO",
        help="pipeline checkpoint folder or Hugging Face Hub repo id (default: the bundled model in checkpoints/)",
    )
    gen.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
    gen.add_argument("--fps", type=float, default=8.0, help="frames per second of the video (default: 8)")
    gen.add_argument(
        "--scale", type=int, default=1, help="enlarge the written video/frames by this integer factor (default: 1)"
    )
    return parser


def _check_output(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise _UsageError(f"{what} must end in {' or '.join(suffixes)}; got {str(path)!r}.")
    if path.is_dir():
        raise _UsageError(f"{what} {str(path)!r} is a folder; give a file name.")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise _UsageError(f"Cannot write {str(path)!r}: {str(existing)!r} is not a folder.")


def _generate(args: argparse.Namespace) -> None:
    # Cheap checks first, so a typo does not wait for torch and the model to load.
    _check_output(args.output, (".mp4", ".gif"), "The output")
    if args.scale < 1:
        raise _UsageError(f"--scale must be at least 1; got {args.scale}.")
    if not 0 < args.fps <= 240:
        raise _UsageError(f"--fps must be in (0, 240]; got {args.fps}.")
    if args.seed < 0:
        raise _UsageError(f"--seed must be non-negative; got {args.seed}.")
    if not Path(args.label).is_file():
        raise _UsageError(f"No label-map file at {args.label!r}.")
    if args.first_frame is not None and not Path(args.first_frame).is_file():
        raise _UsageError(f"No first-frame image at {args.first_frame!r}.")

    from .pipeline import Seg2VidPipeline
    from .video import write_frames, write_gif, write_mp4

    pipe = Seg2VidPipeline.from_pretrained(args.checkpoint, device=args.device)
    if args.first_frame is None:
        out = pipe(args.label, seed=args.seed, motion_scale=args.motion_scale)
    else:
        out = pipe.animate(args.first_frame, args.label, seed=args.seed, motion_scale=args.motion_scale)

    written = []
    options = dict(fps=args.fps, scale=args.scale)
    if args.output.suffix.lower() == ".gif":
        written.append(write_gif(out.frames, args.output, **options))
    else:
        written.append(write_mp4(out.frames, args.output, **options))
        if args.gif:
            written.append(write_gif(out.frames, args.output.with_suffix(".gif"), **options))
    if args.frames_dir is not None:
        paths = write_frames(out.frames, args.frames_dir, scale=args.scale)
        written.append(f"{args.frames_dir}{'/'} ({len(paths)} PNG frames)")
    h, w = out.frames.shape[1:3]
    print(f"{len(out.frames)} frames at {h}x{w} (seed {out.seed}) → " + ", ".join(str(p) for p in written))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        _generate(args)
    except (_UsageError, ValueError, RuntimeError, OSError) as e:
        # ValueError covers bad label maps and CheckpointError; RuntimeError / OSError cover video writing.
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"seg2vid: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seg2vid: interrupted", file=sys.stderr)
        return 130
    return 0
