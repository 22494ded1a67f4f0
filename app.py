"""seg2vid web app: paint (or upload) a street label map, get a 9-frame video with its flow and occlusion maps.

    python app.py [--share] [--checkpoint DIR_OR_REPO] [--port N] [--host HOST] [--device cpu|cuda]

Layout and event wiring only: every model call goes through ``seg2vid.Seg2VidPipeline`` and every piece of
logic that can be tested without a browser lives in ``seg2vid.app_utils``. The model is loaded once at start-up.
Label maps travel as PNG everywhere (Gradio's default WebP would corrupt the class colours).

Moving a z slider re-runs stage 2 only: the pipeline caches the first frame and its image encoding per label
map, and the session keeps the decoded trainIds, so a slider move costs one flow decoder + warp + refiner pass
and one small mp4 encode.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from seg2vid import app_utils as U
from seg2vid import labels, video
from seg2vid.pipeline import Seg2VidPipeline

logger = logging.getLogger("seg2vid.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
FPS = 8  # 9 frames → a 1.1 s loop
VIDEO_SCALE = 2  # 128×256 is tiny in a browser
MAX_SEED = 2**31 - 1
CLASS_TABLE_HEADERS = ["class", "group", "share %"]

DESCRIPTION = """
# seg2vid — video from a single semantic label map
Draw a street scene as a **Cityscapes label map** and watch it move. Stage 1 turns the label map into a first
frame; stage 2, a conditional VAE with separate **foreground** (objects) and **background** (camera) motion codes,
predicts optical flow and occlusion for 8 future frames, warps the first frame and refines it.

1. **Paint** on the street with the class brushes (or upload a label map, or pick an example).
2. **Generate** the first frame and the video.
3. **Scrub** the motion sliders: only the motion is re-sampled, live.

<small>J. Pan, C. Wang, X. Jia, J. Shao, L. Sheng, J. Yan, X. Wang. *Video Generation from Single Semantic Label
Map.* CVPR 2019.</small>
"""

UPLOAD_HELP = (
    "Colour label PNGs in the Cityscapes colours, or grayscale trainId (0–18) / labelId (0–33) maps, any size. "
    "They are centre-cropped to the model's aspect ratio and resized with nearest sampling; colours are snapped to "
    "the nearest class."
)

# The editor's colour swatches carry no names: give each one its class name as a tooltip.
SWATCH_TITLES_JS = """
<script>
const SEG2VID_CLASSES = CLASS_NAMES_JSON;
new MutationObserver(() => {
  document.querySelectorAll("#canvas menu.swatch button.color").forEach((b, i) => {
    if (!b.title && i < SEG2VID_CLASSES.length) {
      b.title = SEG2VID_CLASSES[i];
      b.setAttribute("aria-label", SEG2VID_CLASSES[i]);
    }
  });
}).observe(document.documentElement, {childList: true, subtree: true});
</script>
""".replace("CLASS_NAMES_JSON", json.dumps(list(labels.CLASS_NAMES)))

CSS = """
#banner {background: #fff4e5; border: 1px solid #f0a040; border-radius: 8px; padding: 6px 12px;}
.legend div {margin: 2px 0; line-height: 2;}
.legend .swatch {display: inline-block; padding: 0 6px; margin: 1px 2px; border-radius: 4px; font-size: 12px;
                 line-height: 20px; border: 1px solid rgba(0, 0, 0, 0.15);}
#label-view .image-frame, #first-frame .image-frame {width: 100%; height: 100%;}
#label-view img, #first-frame img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;}
#frames img {image-rendering: pixelated;}
#generate {min-height: 48px;}
"""


# --------------------------------------------------------------------------------------------------------------------
# Session state and handlers


@dataclass(frozen=True)
class Clip:
    """What the sliders re-render from (per browser session): no label decoding, no stage 1 on a slider move."""

    ids: np.ndarray  # (H, W) uint8 trainIds at the model resolution
    photo: np.ndarray | None  # (H, W, 3) uint8 real first frame (paper Table 2), or None to generate one
    seed: int
    fg_path: U.LatentPath  # z_FG(s)
    bg_path: U.LatentPath  # z_BG(s)
    frames: np.ndarray | None = None  # (T+1, H, W, 3) uint8 of the last render (for the GIF / PNG export)


def _stale_exports() -> tuple[gr.File, gr.File]:
    """A new video makes earlier GIF / zip exports stale: renders clear and hide them."""
    return gr.File(None, visible=False), gr.File(None, visible=False)


def friendly(fn):
    """Show any failure of a handler as a short ``gr.Error`` (the traceback goes to the server log only)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            logger.exception("%s failed", fn.__name__)
            raise gr.Error(U.friendly_error(error), print_exception=False) from None

    return wrapper


class Seg2VidApp:
    """The handlers of the page, around one pipeline loaded at start-up."""

    def __init__(self, pipe: Seg2VidPipeline, banner: str | None = None, workdir: str | Path | None = None):
        self.pipe = pipe
        self.banner = banner
        self.size = pipe.resolution  # (H, W)
        self.scale = U.display_scale(self.size)  # the canvas shows the label map enlarged
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="seg2vid-app-"))
        self.start_ids = U.street_scene(self.size)

    # -- label map in ---------------------------------------------------------------------------------------------

    def _label_outputs(self, ids: np.ndarray) -> tuple[np.ndarray, list[list]]:
        """The label map as the model sees it (colours, model resolution) and its class shares."""
        return labels.colorize(ids), U.class_shares(ids)

    def start_canvas(self) -> tuple[dict, np.ndarray, list[list]]:
        """The default street, on the canvas and as the model sees it."""
        return (U.editor_value(self.start_ids, self.scale), *self._label_outputs(self.start_ids))

    @friendly
    def inspect_canvas(self, canvas: dict | None) -> tuple[np.ndarray, list[list]]:
        """Canvas → the label map as the model will see it + class shares (runs after each stroke)."""
        return self._label_outputs(U.editor_to_ids(canvas, self.size))

    @friendly
    def upload_label_map(self, path: str | None) -> tuple[dict, np.ndarray, list[list], str]:
        """An uploaded label file → onto the canvas (model resolution, enlarged for display)."""
        if path is None:
            return gr.skip(), gr.skip(), gr.skip(), ""
        upload = U.read_label_upload(path, self.size)
        if upload.off_palette_fraction > U.OFF_PALETTE_WARNING:
            gr.Warning(
                f"{upload.off_palette_fraction:.0%} of this image is far from every class colour (JPEG artefacts, "
                "anti-aliasing, or not a Cityscapes label map?). Those pixels were snapped to the nearest class: "
                "check the label map below."
            )
        return (
            U.editor_value(upload.ids, self.scale),
            *self._label_outputs(upload.ids),
            upload.describe(self.size),
        )

    @friendly
    def load_example(self, path: str | None) -> tuple[dict, np.ndarray, list[list], str]:
        return self.upload_label_map(path)

    @friendly
    def replace_class(self, canvas: dict | None, old: str, new: str) -> tuple[dict, np.ndarray, list[list]]:
        ids = U.replace_class(U.editor_to_ids(canvas, self.size), old, new)
        return (U.editor_value(ids, self.scale), *self._label_outputs(ids))

    @friendly
    def preview_photo(self, path: str | None) -> np.ndarray | None:
        return None if path is None else U.read_photo_upload(path, self.size)

    # -- generate and scrub ---------------------------------------------------------------------------------------

    def _render(self, clip: Clip, fg: float, bg: float, strength: float) -> tuple:
        """Stage 2 (stage 1 comes from the pipeline cache once computed) → outputs for the page.

        Returns (clip, mp4 path, gallery, flow mosaic, occlusion mosaic). Only the mp4 is encoded here; the GIF
        and the PNG frames are exported on request, so a slider move stays light.
        """
        if not 0.0 <= strength <= 2.0:
            raise ValueError(f"The motion strength must lie in 0–2; got {strength}.")
        z = {"z_fg": clip.fg_path(fg), "z_bg": clip.bg_path(bg), "motion_scale": float(strength)}
        if clip.photo is None:
            out = self.pipe(clip.ids, seed=clip.seed, **z)
        else:
            out = self.pipe.animate(clip.photo, clip.ids, seed=clip.seed, **z)
        path = video.write_mp4(
            out.frames, U.fresh_output_dir(self.workdir) / "seg2vid.mp4", FPS, VIDEO_SCALE, preset="veryfast"
        )
        clip = replace(clip, frames=out.frames)
        gallery = [(f, "first frame" if t == 0 else f"t = {t}") for t, f in enumerate(out.frames)]
        return clip, str(path), gallery, U.flow_mosaic(out.flow_bwd), U.occlusion_mosaic(out.occ_bwd)

    @friendly
    def generate(
        self,
        canvas: dict | None,
        photo_path: str | None,
        seed: float | None,
        fg: float,
        bg: float,
        strength: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 — Gradio injects the tracker through this default
    ) -> tuple:
        """Label map (+ optional real first frame) → first frame, video, frames, flow, occlusion.

        Also returns the label map it used (as the model sees it) and its class shares: the canvas reports
        strokes to the server lazily, so this is the authoritative view of what was generated from.
        """
        started = time.perf_counter()
        seed = int(np.clip(seed, 0, MAX_SEED)) if seed is not None and np.isfinite(seed) else 0
        progress(0.0, desc="Reading the label map")
        ids = U.editor_to_ids(canvas, self.size)
        photo = None if photo_path is None else U.read_photo_upload(photo_path, self.size)
        fg_path, bg_path = U.latent_paths(  # the prior may depend on the layout: the codes of this label map
            lambda s: self.pipe.sample_z(s, label_map=ids), seed, self.pipe.prior_mean(ids))
        clip = Clip(ids=ids, photo=photo, seed=seed, fg_path=fg_path, bg_path=bg_path)
        if photo is None:
            progress(0.2, desc="Stage 1: the first frame")
            self.pipe.first_frame(ids)  # cached: the call below and every slider move reuse it
        progress(0.5, desc="Stage 2: flow, occlusion, warping, refinement")
        clip, path, gallery, flow, occ = self._render(clip, fg, bg, strength)
        progress(1.0, desc="Done")
        source = "your photo" if photo is not None else "stage 1"
        status = f"Seed {seed} · first frame from {source} · {time.perf_counter() - started:.2f} s"
        return (clip, clip.frames[0], path, path, *_stale_exports(), gallery, flow, occ, status,
                *self._label_outputs(ids))

    @friendly
    def scrub(self, clip: Clip | None, fg: float, bg: float, strength: float) -> tuple:
        """A slider moved: re-sample the motion only (no label decoding, no stage 1)."""
        if clip is None:
            gr.Info("Press Generate first; the sliders then re-sample the motion live.")
            return (gr.skip(),) * 9
        started = time.perf_counter()
        clip, path, gallery, flow, occ = self._render(clip, fg, bg, strength)
        took = time.perf_counter() - started
        status = f"Seed {clip.seed} · FG {fg:+.2f} · BG {bg:+.2f} · strength {strength:.2f} · {took:.2f} s"
        return clip, path, path, *_stale_exports(), gallery, flow, occ, status

    @friendly
    def export(self, clip: Clip | None) -> tuple[gr.File | None, gr.File | None]:
        """The last render as a looping GIF (enlarged like the video) and a zip of its PNG frames."""
        if clip is None or clip.frames is None:
            gr.Warning("Press Generate first: there is no video to export yet.")
            return None, None
        folder = U.fresh_output_dir(self.workdir)
        gif = video.write_gif(clip.frames, folder / "seg2vid.gif", FPS, VIDEO_SCALE)
        zip_path = video.frames_zip(clip.frames, folder / "seg2vid_frames.zip")
        return gr.File(str(gif), visible=True), gr.File(str(zip_path), visible=True)


def example_files(folder: Path = EXAMPLES_DIR) -> dict[str, Path]:
    """Scene name → example label map; a scene saved at several sizes (``name_128x256.png``) is listed once."""
    scenes: dict[str, Path] = {}
    for path in sorted(folder.glob("*.png")):
        name = re.sub(r"_\d+x\d+$", "", path.stem).replace("_", " ")
        scenes.setdefault(name, path)  # sorted: the smallest size first, which decodes to the same map
    return scenes


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


# --------------------------------------------------------------------------------------------------------------------
# Layout


def build_demo(app: Seg2VidApp) -> gr.Blocks:
    h, w = app.size
    canvas_value, label_image, class_rows = app.start_canvas()
    names = list(labels.CLASS_NAMES)
    model_only = {"concurrency_id": "model", "concurrency_limit": 1}
    brush_size = max(2, w * app.scale // 48)  # radius in canvas pixels: a thin stroke on the displayed canvas

    with gr.Blocks(title="seg2vid", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        if app.banner:
            gr.Markdown(f"⚠️ **{app.banner}**", elem_id="banner")
        clip = gr.State(None)

        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=560):
                gr.Markdown(f"### 1 · Label map  <small>(model resolution {w}×{h})</small>")
                # The canvas stays visible: an ImageEditor given a new value while hidden (in a tab) stalls.
                canvas = gr.ImageEditor(
                    value=canvas_value,
                    type="numpy",
                    image_mode="RGBA",
                    format="png",
                    sources=(),
                    transforms=(),
                    layers=False,
                    # The eraser removes strokes and reveals the background label map (the background layer is
                    # opaque); transparent pixels, should any arrive, keep the background.
                    eraser=gr.Eraser(default_size=brush_size),
                    brush=gr.Brush(
                        colors=U.palette_hex(),
                        default_color=U.palette_hex()[labels.NAME_TO_ID["car"]],
                        color_mode="fixed",
                        default_size=brush_size,
                    ),
                    canvas_size=(w * app.scale, h * app.scale),
                    fixed_canvas=True,
                    show_label=False,
                    elem_id="canvas",
                )
                gr.HTML(U.legend_html())
                with gr.Tabs():
                    with gr.Tab("Upload"):
                        upload = gr.File(
                            label="Label map image", file_types=["image"], type="filepath", elem_id="upload"
                        )
                        gr.Markdown(UPLOAD_HELP)
                    with gr.Tab("Examples"):
                        examples = example_files()
                        if examples:
                            example_image = gr.Image(visible=False, type="filepath", image_mode=None, format="png")
                            gr.Examples(
                                examples=[[str(p)] for p in examples.values()],
                                inputs=[example_image],
                                label="Click an example to load it onto the canvas",
                                cache_examples=False,
                                examples_per_page=12,
                            )
                        else:
                            example_image = None
                            gr.Markdown("No example label maps are installed (`assets/examples/*.png`).")
                    with gr.Tab("Replace a class"):
                        with gr.Row():
                            old_class = gr.Dropdown(names, value="car", label="Replace every")
                            new_class = gr.Dropdown(names, value="truck", label="by")
                        replace_btn = gr.Button("Replace", size="sm")
                    with gr.Tab("Start over"):
                        reset = gr.Button("Reset the canvas to the empty street", size="sm")
                upload_note = gr.Markdown("", elem_id="upload-note")
                with gr.Row():
                    label_view = gr.Image(
                        label_image, label="Label map as the model sees it", format="png",
                        interactive=False, elem_id="label-view", scale=1, height=220,
                    )
                    class_table = gr.Dataframe(
                        class_rows, headers=CLASS_TABLE_HEADERS, label="Class shares", interactive=False,
                        max_height=260, scale=1, elem_id="class-table", column_widths=["36%", "39%", "25%"],
                    )

            with gr.Column(scale=2, min_width=380):
                gr.Markdown("### 2 · Generate")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED, scale=3)
                    dice = gr.Button("Random seed", scale=1)
                fg = gr.Slider(-1, 1, value=0, step=0.02, label="Foreground motion (z_FG)",
                               info="How the objects move in the picture (cars, people, bikes: paint some to see "
                                    "it act)", elem_id="fg-slider")
                bg = gr.Slider(-1, 1, value=0, step=0.02, label="Background motion (z_BG, camera)",
                               info="How the street, buildings and sky move: the camera", elem_id="bg-slider")
                strength = gr.Slider(0, 2, value=1, step=0.05, label="Motion strength",
                                     info="Scales the predicted flow (0 = still)", elem_id="strength-slider")
                with gr.Accordion("Animate your own photo (optional)", open=False):
                    gr.Markdown("Give a real first frame that matches the label map; stage 2 animates it.")
                    with gr.Row():
                        photo = gr.File(label="First frame", file_types=["image"], type="filepath")
                        photo_view = gr.Image(label="As the model sees it", format="png", interactive=False)
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown("", elem_id="status")
                first_frame = gr.Image(label="First frame", format="png", interactive=False, elem_id="first-frame",
                                       height=240)
                video_out = gr.Video(label="Video", autoplay=True, loop=True, interactive=False, elem_id="video")
                with gr.Row():
                    mp4_btn = gr.DownloadButton("Download mp4", size="sm")
                    export_btn = gr.Button("Export GIF + PNG frames", size="sm")
                with gr.Row():
                    gif_file = gr.File(label="GIF", interactive=False, visible=False)
                    zip_file = gr.File(label="Frames (PNG, zip)", interactive=False, visible=False)

        gr.Markdown("### 3 · Frames, flow and occlusion")
        with gr.Tabs():
            with gr.Tab("Frames"):
                gallery = gr.Gallery(label="Frames", format="png", columns=5, height="auto", object_fit="contain",
                                     elem_id="frames")
            with gr.Tab("Flow"):
                flow_view = gr.Image(label="Backward flow w^b_t, t = 1…8 (hue = direction, saturation = speed)",
                                     format="png", interactive=False)
            with gr.Tab("Occlusion"):
                occ_view = gr.Image(label="Backward occlusion o^b_t, t = 1…8 (white = visible in the first frame)",
                                    format="png", interactive=False)

        # -- events -----------------------------------------------------------------------------------------------
        label_outputs = [label_view, class_table]
        canvas.change(app.inspect_canvas, canvas, label_outputs, trigger_mode="always_last",
                      show_progress="hidden", api_name="label_map")
        reset.click(app.start_canvas, None, [canvas, *label_outputs], api_name="reset")
        upload.upload(app.upload_label_map, upload, [canvas, *label_outputs, upload_note], api_name="upload")
        if example_image is not None:
            example_image.change(app.load_example, example_image, [canvas, *label_outputs, upload_note],
                                 api_name="example")
        replace_btn.click(app.replace_class, [canvas, old_class, new_class], [canvas, *label_outputs],
                          api_name="replace_class")
        photo.upload(app.preview_photo, photo, photo_view, api_name="photo")
        photo.clear(lambda: None, None, photo_view, api_visibility="private")

        render_outputs = [clip, video_out, mp4_btn, gif_file, zip_file, gallery, flow_view, occ_view, status]
        generate_inputs = [canvas, photo, seed, fg, bg, strength]
        generate_outputs = [clip, first_frame, *render_outputs[1:], *label_outputs]
        generate_btn.click(app.generate, generate_inputs, generate_outputs, api_name="generate", **model_only)
        dice.click(random_seed, None, seed, api_visibility="private").then(
            app.generate, generate_inputs, generate_outputs, api_visibility="private", **model_only
        )
        for slider in (fg, bg, strength):
            slider.change(app.scrub, [clip, fg, bg, strength], render_outputs, trigger_mode="always_last",
                          show_progress="minimal", api_name="scrub" if slider is fg else None,
                          api_visibility="public" if slider is fg else "private", **model_only)
        export_btn.click(app.export, clip, [gif_file, zip_file], api_name="export")
    return demo


# --------------------------------------------------------------------------------------------------------------------
# Start-up


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="seg2vid web app: video generation from a single semantic label map.")
    p.add_argument("--checkpoint", default=None,
                   help="pipeline folder or Hugging Face Hub repo id (default: the bundled model in checkpoints/)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--host", default=None,
                   help="address to listen on, e.g. 0.0.0.0 (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--share", action="store_true", help="also serve through a temporary public gradio.live link")
    return p.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        pipe, banner = U.load_app_pipeline(args.checkpoint, device=args.device)
    except ValueError as error:  # CheckpointError and bad devices: say why, no traceback
        raise SystemExit(f"seg2vid: {error}") from None
    if banner:
        logger.warning(banner)
    logger.info("Serving %r", pipe)
    demo = build_demo(Seg2VidApp(pipe, banner))
    share = args.share
    if share and not U.share_available():
        logger.warning("--share: the share server cannot be reached (offline?); serving locally only.")
        share = False
    demo.queue(default_concurrency_limit=4, max_size=64).launch(
        server_name=args.host,
        server_port=args.port,
        share=share,
        show_error=True,  # handlers raise gr.Error with friendly messages only
        max_file_size="50mb",
        theme=gr.themes.Soft(),
        css=CSS,
        head=SWATCH_TITLES_JS,
    )


if __name__ == "__main__":
    main()
