"""SynthCity: procedural 3-D street scenes with ground-truth bidirectional flow and occlusion.

A pinhole camera on a car drives down a randomly generated street (buildings with windows, sidewalks and kerbs,
walls, fences, poles, signs, traffic lights, trees, grass, parked and moving cars, buses, trucks, pedestrians,
cyclists) rendered by per-pixel ray casting against analytic primitives; see ``scene.py`` (world frame),
``geometry.py`` (camera), ``shading.py`` (textures), ``motion.py`` (flow and occlusion).

    from seg2vid.data.synthcity import render_clip
    clip = render_clip(seed, size=(128, 256), num_frames=9)
    clip.frames (9, H, W, 3) uint8 · clip.labels (9, H, W) uint8 trainIds
    clip.flow_fwd / clip.flow_bwd (8, H, W, 2) float32 pixels · clip.occ_fwd / clip.occ_bwd (8, H, W) uint8 {0, 1}

Seeds below ``HELDOUT_SEED_START`` are for training; seeds from it on are held out for evaluation.

On-disk layout written by ``python -m seg2vid.data.synthcity --out DIR --seeds 0:1000 --size 128x256``::

    DIR/meta.json                    {"format": "synthcity-v1", "size": [H, W], "num_frames": 9, ...}
    DIR/0000042/frame_00.png …       RGB frames (num_frames of them)
    DIR/0000042/label_00.png …       grayscale PNGs holding trainIds
    DIR/0000042/motion.npz           np.savez_compressed: flow_fwd, flow_bwd (T, H, W, 2) float16 pixels,
                                     occ_fwd, occ_bwd (T, H, W) uint8 {0, 1}
    DIR/0000042/clip.json            scene metadata (camera speed, vanishing point, …); written last

A clip folder is written under a temporary name and renamed when complete, so an interrupted run leaves no
partial clip and a re-run skips the clips that are already there.
"""

from .clip import SynthClip, render_clip
from .scene import FRAME_INTERVAL_S, SceneParams, build_scene

HELDOUT_SEED_START = 1_000_000  # evaluation seeds start here; training uses seeds below

__all__ = ["render_clip", "SynthClip", "SceneParams", "build_scene", "FRAME_INTERVAL_S", "HELDOUT_SEED_START"]
