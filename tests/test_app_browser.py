"""The web app in a real browser: Debian's Chromium driven by Playwright (no browser download).

Paints two strokes of two classes, generates, waits for a playable video, moves the foreground slider and waits
for a new video, then uploads an example label map. Screenshots go to the test's tmp folder; with
``SEG2VID_APP_SCREENSHOT=PATH`` the app runs the bundled model (or its untrained stand-in) instead of the tiny
test model and the final page is also saved to PATH (e.g. ``benchmarks/results/app_screenshot.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from test_app_api import running_app, street_with_objects
from test_app_utils import save_png, tiny_pipeline

from seg2vid import app_utils as U
from seg2vid import labels

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright; .ci/run installs it)"
)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(
        "Debian's Chromium is not installed (apt-get install chromium; .ci/run installs it)", allow_module_level=True
    )

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_ENV = "SEG2VID_APP_SCREENSHOT"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 90_000  # generous: CI machines are small and this one is shared
VIDEO_READY = """() => { const v = document.querySelector('#video video');
                        return v !== null && v.readyState >= 2 && v.duration > 0 ? v.src : null; }"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if os.environ.get(SCREENSHOT_ENV):
        checkpoint = None  # the bundled model (or untrained demo weights): what a visitor would see
    else:
        checkpoint = tmp_path_factory.mktemp("tiny_model")
        tiny_pipeline().save_pretrained(checkpoint)
    with running_app(checkpoint, tmp_path_factory.mktemp("app_log") / "app.log") as url:
        yield url


@pytest.fixture()
def page(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(app_url)
            page.locator("#canvas canvas").first.wait_for(state="visible")
            yield page
        finally:
            browser.close()


def pick_class(page, name: str) -> None:
    """Open the editor's colour palette, click the swatch of ``name`` (tooltips name them), close the palette."""
    page.locator("#canvas button[aria-label='Color']").click()
    page.locator(f"#canvas menu.swatch button.color[title='{name}']").click()
    page.locator("#canvas button[aria-label='Brush']").click()  # closes the palette, keeps the brush
    page.locator("#canvas menu.swatch").wait_for(state="detached")


class CanvasSaves:
    """Counts the editor's saves: after each stroke it uploads background, composite and layer (accept_blobs).

    Generate reads the last completed save, so a stroke counts as painted once its save has finished.
    """

    FILES_PER_SAVE = 3

    def __init__(self, page):
        self.started = self.finished = 0
        page.on("request", lambda r: self._count(r, "started"))
        page.on("requestfinished", lambda r: self._count(r, "finished"))
        page.on("requestfailed", lambda r: self._count(r, "finished"))

    def _count(self, request, which: str) -> None:
        if "component_server" in request.url:
            setattr(self, which, getattr(self, which) + 1)

    def wait_for_next(self, page, since: int) -> None:
        """Wait until a save begun after ``since`` finished uploads has completed and nothing is in flight."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not (self.finished >= since + self.FILES_PER_SAVE and self.started == self.finished):
            if time.monotonic() > deadline:
                raise AssertionError(f"the canvas was not saved within {TIMEOUT_MS / 1000:.0f} s")
            page.wait_for_timeout(100)


def stroke(page, saves: CanvasSaves, start: tuple[float, float], end: tuple[float, float], steps: int = 3) -> None:
    """Drag across the canvas between two points (fractions of its width and height); wait until it is saved.

    Few intermediate moves: a software-rendered (SwiftShader) canvas repaints slowly on a small machine.
    """
    box = page.locator("#canvas canvas").first.bounding_box()
    point = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    saves.wait_for_next(page, saves.finished - saves.FILES_PER_SAVE)  # nothing in flight
    before = saves.finished
    page.mouse.move(*point(*start))
    page.mouse.down()
    for k in range(1, steps + 1):
        t = k / steps
        page.mouse.move(*point(start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
    page.mouse.up()
    saves.wait_for_next(page, before)


def playable_video(page, other_than: str | None = None) -> str:
    """Wait until the player holds a playable video (other than ``other_than``); return its URL."""
    condition = f"() => {{ const s = ({VIDEO_READY})(); return s !== null && s !== {json.dumps(other_than)} && s; }}"
    return page.wait_for_function(condition).json_value()


def class_table_text(page) -> str:
    return page.locator("#class-table").inner_text()


def example_label_map(tmp_path: Path) -> Path:
    examples = sorted((ROOT / "assets" / "examples").glob("*.png"))
    if examples:
        return examples[0]
    return save_png(labels.colorize(street_with_objects()), tmp_path / "example.png")


@contextmanager
def step(page, tmp_path: Path, name: str):
    """One step of a browser scenario: on failure, save a screenshot and say which step failed after how long."""
    started = time.monotonic()
    try:
        yield
    except Exception as error:
        page.screenshot(path=tmp_path / f"failed_{name}.png", full_page=True)
        raise AssertionError(f"step {name!r} failed after {time.monotonic() - started:.0f} s: {error}") from error


def test_paint_generate_scrub_and_upload_in_a_browser(page, tmp_path):
    with step(page, tmp_path, "paint"):  # a car on the road and a person on the sidewalk, with the class swatches
        saves = CanvasSaves(page)
        pick_class(page, "car")
        stroke(page, saves, (0.40, 0.80), (0.60, 0.80))
        pick_class(page, "person")
        stroke(page, saves, (0.85, 0.60), (0.85, 0.85))
        page.screenshot(path=tmp_path / "1_painted.png", full_page=True)

    with step(page, tmp_path, "generate"):  # a playable video, made from a label map holding both classes
        page.locator("#generate").click()
        first_src = playable_video(page)
        page.wait_for_function(
            "() => ['car', 'person'].every(c => document.querySelector('#class-table').innerText.includes(c))"
        )
        table = class_table_text(page)
        assert "foreground" in table and "road" in table
        page.screenshot(path=tmp_path / "2_generated.png", full_page=True)

    with step(page, tmp_path, "scrub"):  # moving the foreground slider re-renders the video live
        slider = page.locator("#fg-slider input[type='range']")
        slider.focus()
        for _ in range(15):
            page.keyboard.press("ArrowRight")
        assert float(slider.input_value()) > 0
        page.locator("#status").get_by_text("FG +").wait_for()  # the scrub handler ran with the moved slider …
        # … and the player got a new, playable video (Gradio serves files by content hash: new src = new frames)
        playable_video(page, other_than=first_src)
        page.screenshot(path=tmp_path / "3_scrubbed.png", full_page=True)

    with step(page, tmp_path, "upload"):  # a colour label map lands on the canvas and in the model's view
        example = example_label_map(tmp_path)
        page.locator("#upload input[type='file']").set_input_files(str(example))
        page.locator("#upload-note").get_by_text("nearest").wait_for()
        assert "Read a" in page.locator("#upload-note").inner_text()
        page.wait_for_function(  # the editor has loaded the uploaded map
            "() => document.querySelector('#canvas [data-testid=status-tracker]').classList.contains('hide')"
        )

    with step(page, tmp_path, "generate_uploaded"):
        scrubbed_src = playable_video(page)
        page.locator("#generate").click()
        page.locator("#status").get_by_text("first frame from stage 1").wait_for()
        playable_video(page, other_than=scrubbed_src)
        size = page.evaluate(
            "() => { const i = document.querySelector('#label-view img'); return [i.naturalHeight, i.naturalWidth]; }"
        )
        uploaded = U.read_label_upload(example, tuple(size)).ids
        table = class_table_text(page)
        assert all(labels.CLASS_NAMES[i] in table for i in np.unique(uploaded) if i < labels.NUM_CLASSES)
        page.screenshot(path=tmp_path / "4_uploaded.png", full_page=True)

    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=target, full_page=True)
        assert Path(target).stat().st_size > 10_000


def test_canvas_starts_as_the_street_at_the_model_resolution(page):
    box = page.locator("#canvas canvas").first.bounding_box()
    assert box["width"] >= 400  # enlarged for painting
    view = page.locator("#label-view img")
    view.wait_for()
    size = page.evaluate("(img) => [img.naturalHeight, img.naturalWidth]", view.element_handle())
    expected = U.street_scene(tuple(size))
    assert size[1] == 2 * size[0]  # the model's 1:2 aspect
    table = class_table_text(page)
    for i in np.unique(expected):
        assert labels.CLASS_NAMES[i] in table
