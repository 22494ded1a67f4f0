"""Quality of the bundled model: ``training/evaluate.py`` with the standard protocol, printed as a Markdown table.

Protocol: 100 held-out SynthCity clips (seeds 1,000,000–1,000,099) at 128×256, stage 2 animating the true first
frame, K = 10 z samples per clip drawn as one stratified set from a seed of the clip's own (best-of-10 and mean),
label fidelity with ``checkpoints/segmenter`` when it exists. See ``training/evaluate.py`` for every metric;
``--z-sampling independent`` draws the 10 codes of 10 seeds independently instead, ``--z-seeds shared`` gives
every clip the same seed(s).

    python benchmarks/quality.py                                   # bundled model in checkpoints/
    python benchmarks/quality.py --checkpoint runs/x/export --out benchmarks/out/quality
    python benchmarks/quality.py --num-clips 10 --k 4              # a quick look (not the reported protocol)
    python benchmarks/quality.py --z-sampling independent          # best of 10 independent codes
    python benchmarks/quality.py --z-seed-offset 7000000000         # another draw of the codes: how much is luck

Writes ``metrics.json`` and ``metrics.md`` to ``--out`` (default ``benchmarks/out/quality``) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from training import evaluate  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints"))
    p.add_argument("--segmenter", default=str(REPO / "checkpoints" / "segmenter"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "quality"))
    p.add_argument("--num-clips", default="100")
    p.add_argument("--k", default="10")
    p.add_argument("--size", default="128x256")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args, rest = p.parse_known_args(argv)  # anything else goes to evaluate.py (e.g. --cityscapes ROOT)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return evaluate.main([
        "--checkpoint", args.checkpoint, "--segmenter", args.segmenter, "--out", args.out,
        "--num-clips", args.num_clips, "--k", args.k, "--size", args.size, *rest,
    ])


if __name__ == "__main__":
    sys.exit(main())
