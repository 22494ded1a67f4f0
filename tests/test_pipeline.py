"""Seg2VidPipeline on tiny random models: inputs, shapes, seeds and z, caching, saving, resolution."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from seg2vid import Seg2VidOutput, Seg2VidPipeline, labels
from seg2vid.checkpoint import CheckpointError
from seg2vid.config import FlowPredictorConfig, ImageGeneratorConfig
from seg2vid.networks.flow_predictor import FlowPredictor
from seg2vid.networks.image_generator import ImageGenerator

SIZE = (32, 64)  # (H, W) of the tiny models
T = 4


def tiny_models(seed: int = 0, size=SIZE, head_std: float = 0.5, **stage2) -> tuple[ImageGenerator, FlowPredictor]:
    """Randomly initialised, tiny stage-1 and stage-2 networks (milliseconds per call on a CPU).

    ``stage2`` overrides FlowPredictorConfig fields (e.g. ``num_frames`` or the ``semantics`` / ``use_flow``
    variants). Output layers that a fresh model initialises to zero get N(0, head_std²) weights instead.
    """
    stage2 = {"num_frames": T, **stage2}
    torch.manual_seed(seed)
    image_generator = ImageGenerator(
        ImageGeneratorConfig(base_channels=4, num_downsample=2, num_res_blocks=1, max_channels=8, image_size=size)
    )
    flow_predictor = FlowPredictor(
        FlowPredictorConfig(
            image_size=size,
            z_fg_dim=6,
            z_bg_dim=3,
            encoder_stem_channels=4,
            encoder_channels=(4, 4, 8, 8),
            motion_channels=(4, 4, 8, 8, 8),
            decoder_channels=(8, 8, 4, 4),
            refiner_channels=(4, 4, 8, 8),
            **stage2,
        )
    )
    # Output layers initialised to zero (zero flow, identity refiner) would make every seed look alike.
    with torch.no_grad():
        for p in flow_predictor.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, head_std)
    return image_generator, flow_predictor


def blocky_label_map(seed: int = 0, size=SIZE) -> np.ndarray:
    """(H, W) trainIds: road below sky, a few random boxes of random classes (some foreground)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ids = np.full((h, w), 10, np.uint8)  # sky
    ids[h // 2 :] = 0  # road
    for _ in range(6):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        dy, dx = rng.integers(3, h // 2), rng.integers(3, w // 3)
        ids[y : y + dy, x : x + dx] = rng.integers(0, labels.NUM_CLASSES)
    return ids


@pytest.fixture(scope="module")
def pipe() -> Seg2VidPipeline:
    return Seg2VidPipeline(*tiny_models(), device="cpu")


@pytest.fixture
def ids() -> np.ndarray:
    return blocky_label_map(0)


def count_calls(module: torch.nn.Module) -> list[int]:
    """Count forward calls of ``module`` with a hook; returns a one-element list that is updated in place."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def count_method(monkeypatch, obj, name: str) -> list[int]:
    calls = [0]
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# Inputs, shapes, dtypes


def _input_kinds(ids: np.ndarray, tmp_path) -> dict:
    color = labels.colorize(ids)
    color_png = tmp_path / "color.png"
    Image.fromarray(color).save(color_png)
    gray_png = tmp_path / "train_ids.png"
    Image.fromarray(ids).save(gray_png)
    label_id_png = tmp_path / "label_ids.png"
    label_ids = np.array([c.label_id for c in labels.CLASSES], np.uint8)[ids]
    Image.fromarray(label_ids).save(label_id_png)
    return {
        "trainId array": ids,
        "int64 array": ids.astype(np.int64),
        "tensor": torch.from_numpy(ids),
        "colour array": color,
        "PIL colour": Image.fromarray(color),
        "PIL trainIds": Image.fromarray(ids),
        "colour png path": color_png,
        "trainId png str": str(gray_png),
        "labelId png": label_id_png,
    }


def test_output_shapes_dtypes_and_every_input_kind(pipe, ids, tmp_path):
    h, w = SIZE
    fg_dim, bg_dim = pipe.z_dims
    reference = None
    for kind, label_map in _input_kinds(ids, tmp_path).items():
        out = pipe(label_map, seed=3)
        assert isinstance(out, Seg2VidOutput)
        assert out.frames.shape == (T + 1, h, w, 3) and out.frames.dtype == np.uint8, kind
        assert out.warped.shape == (T, h, w, 3) and out.warped.dtype == np.uint8
        for flow in (out.flow_fwd, out.flow_bwd):
            assert flow.shape == (T, h, w, 2) and flow.dtype == np.float32
            assert np.isfinite(flow).all()
        for occ in (out.occ_fwd, out.occ_bwd):
            assert occ.shape == (T, h, w) and occ.dtype == np.float32
            assert occ.min() >= 0 and occ.max() <= 1
        assert out.z_fg.shape == (fg_dim,) and out.z_bg.shape == (bg_dim,)
        assert out.z_fg.dtype == torch.float32 and out.z_fg.device.type == "cpu"
        np.testing.assert_array_equal(out.label_map, ids, err_msg=kind)
        np.testing.assert_array_equal(out.first_frame, out.frames[0])
        # Every kind decodes to the same trainIds, hence the same video.
        if reference is None:
            reference = out.frames
        np.testing.assert_array_equal(out.frames, reference, err_msg=kind)
    assert pipe.num_frames == T and pipe.resolution == SIZE


def test_label_map_of_another_size_is_resized_with_nearest_sampling(pipe):
    big = blocky_label_map(1, size=(64, 128))
    out = pipe(big, seed=0)
    assert out.frames.shape[1:3] == SIZE
    np.testing.assert_array_equal(out.label_map, labels.resize_ids(big, SIZE))
    assert set(np.unique(out.label_map)) <= set(np.unique(big))  # nearest: no new values


@pytest.mark.parametrize(
    "label_map, match",
    [
        ([[0, 1], [2, 3]], "trainId array"),
        (np.zeros((32, 64), np.float32), "integer"),
        (np.zeros((2, 32, 64), np.uint8), "shape"),
        (np.full((32, 64), 40, np.uint8), "trainIds"),
        ("/no/such/label.png", "No label-map file"),
        (None, "label map"),
    ],
)
def test_bad_label_maps_raise_value_error(pipe, label_map, match):
    with pytest.raises(ValueError, match=match):
        pipe(label_map)


def test_a_photo_is_refused_as_label_map(pipe):
    photo = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="does not look like a label map"):
        pipe(photo)


def test_unreadable_image_file_raises_value_error(pipe, tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        pipe(path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(seed=True), "seed"),
        (dict(motion_scale=float("nan")), "motion_scale"),
        (dict(motion_scale="fast"), "motion_scale"),
        (dict(motion_scale=-1.0), "motion_scale"),
        (dict(z_fg=torch.zeros(5)), r"z_fg must have shape \(6,\)"),
        (dict(z_bg=torch.zeros(2, 3)), "z_bg"),
        (dict(z_bg=torch.full((3,), float("inf"))), "infinite"),
    ],
)
def test_bad_arguments_raise_value_error(pipe, ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(ids, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Seeds, latent codes, motion scale


def test_same_seed_is_bitwise_identical_even_after_clearing_the_cache(pipe, ids):
    a = pipe(ids, seed=7)
    pipe.clear_cache()
    b = pipe(ids, seed=7)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.flow_fwd, b.flow_fwd)
    np.testing.assert_array_equal(a.occ_bwd, b.occ_bwd)
    assert torch.equal(a.z_fg, b.z_fg) and torch.equal(a.z_bg, b.z_bg)


def test_different_seeds_give_different_codes_and_flow(pipe, ids):
    a, b = pipe(ids, seed=0), pipe(ids, seed=1)
    assert not torch.equal(a.z_fg, b.z_fg) and not torch.equal(a.z_bg, b.z_bg)
    assert np.abs(a.flow_bwd - b.flow_bwd).max() > 1e-4
    np.testing.assert_array_equal(a.frames[0], b.frames[0])  # the first frame depends on the label map only


def test_codes_come_from_the_seed_through_sample_z(pipe, ids):
    generator = torch.Generator().manual_seed(11)
    z_fg, z_bg = pipe.flow_predictor.sample_z(1, generator=generator, device=torch.device("cpu"))
    out = pipe(ids, seed=11)
    assert torch.equal(out.z_fg, z_fg[0]) and torch.equal(out.z_bg, z_bg[0])


def test_sample_z_set_gives_k_stratified_codes_that_run_as_given_codes(pipe, ids):
    z_fg, z_bg = pipe.sample_z_set(6, seed=4)
    assert z_fg.shape == (6, pipe.z_dims[0]) and z_bg.shape == (6, pipe.z_dims[1])
    assert z_fg.dtype == torch.float32 and z_fg.device.type == "cpu"
    # The flow predictor's stratified draw from a generator seeded with the seed, reproducibly.
    expected = pipe.flow_predictor.sample_z(6, torch.Generator().manual_seed(4), torch.device("cpu"), stratified=True)
    assert torch.equal(z_fg, expected[0]) and torch.equal(z_bg, expected[1])
    assert torch.equal(pipe.sample_z_set(6, seed=4)[1], z_bg) and not torch.equal(pipe.sample_z_set(6, seed=5)[1], z_bg)
    # This tiny model samples N(0, I): its first coordinate takes one value from each sixth of N(0, 1).
    slices = (torch.distributions.Normal(0.0, 1.0).cdf(z_fg[:, 0]) * 6).floor().long()
    assert sorted(slices.tolist()) == list(range(6))
    # Row j runs as a given code and comes back unchanged.
    out = pipe(ids, z_fg=z_fg[2], z_bg=z_bg[2])
    assert torch.equal(out.z_fg, z_fg[2]) and torch.equal(out.z_bg, z_bg[2])
    assert np.abs(out.flow_bwd - pipe(ids, z_fg=z_fg[3], z_bg=z_bg[3]).flow_bwd).max() > 1e-4


def test_a_layout_conditioned_prior_draws_for_the_label_map_at_hand(ids):
    from seg2vid.networks.flow_predictor import layout_descriptor

    generator, flow_predictor = tiny_models(fitted_prior=True, prior_components=4, prior_neighbours=2)
    maps = [blocky_label_map(s) for s in (1, 2, 3, 4)]  # the "training clips"
    layouts = torch.cat([layout_descriptor(labels.one_hot(m).unsqueeze(0)) for m in maps])
    g = torch.Generator().manual_seed(0)
    flow_predictor.set_prior_mixture(torch.randn(4, 6, generator=g), torch.zeros(4, 6),
                                     torch.randn(4, 3, generator=g), torch.zeros(4, 3), layouts)
    pipe = Seg2VidPipeline(generator, flow_predictor, device="cpu")
    pools = [flow_predictor.neighbours(labels.one_hot(m).unsqueeze(0)).tolist() for m in maps]
    assert len({tuple(p) for p in pools}) > 1  # the maps below draw from different components
    codes = []
    for label_map in (*maps, ids):
        heatmaps = labels.one_hot(label_map).unsqueeze(0)
        pool = flow_predictor.neighbours(heatmaps)
        assert len(pool) == 2
        # A seed's code is the flow predictor's draw for this label map; calls use it, and sample_z says so.
        expected = flow_predictor.sample_z(1, torch.Generator().manual_seed(5), torch.device("cpu"), heatmaps=heatmaps)
        out = pipe(label_map, seed=5)
        assert torch.equal(out.z_fg, expected[0][0]) and torch.equal(out.z_bg, expected[1][0])
        z_fg, z_bg = pipe.sample_z(5, label_map=label_map)
        assert torch.equal(z_fg, expected[0]) and torch.equal(z_bg, expected[1])
        codes.append(z_fg)
        # Every code of a set comes from the label map's neighbours, and the centre is theirs.
        set_fg, _ = pipe.sample_z_set(6, seed=1, label_map=label_map)
        assert torch.cdist(set_fg, flow_predictor.prior_means_fg).argmin(1).unique().tolist() == pool.tolist()
        torch.testing.assert_close(pipe.prior_mean(label_map)[0], flow_predictor.prior_means_fg[pool].mean(0))
    # A training clip's own label map is among its own nearest neighbours; the same seed, another map, another code.
    assert all(i in pool for i, pool in enumerate(pools))
    assert any(not torch.equal(codes[0], c) for c in codes[1:])
    for model in (pipe, Seg2VidPipeline(*tiny_models(), device="cpu")):  # conditioned or not, a bad map is refused
        with pytest.raises(ValueError, match="must be uint8"):
            model.sample_z(5, label_map=np.zeros((4, 4, 3), np.float64))
    # Without a label map: all four components, as for an unconditioned prior.
    unconditioned = flow_predictor.sample_z(1, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert torch.equal(pipe.sample_z(5)[0], unconditioned[0])


@pytest.mark.parametrize("k, seed, message", [
    (0, 0, "k must be"), (True, 0, "k must be"), (2.5, 0, "k must be"), (10**6, 0, "k must be"),
    (3, -1, "seed must be"), (3, 1.5, "seed must be"),
])
def test_sample_z_set_refuses_bad_arguments(pipe, k, seed, message):
    with pytest.raises(ValueError, match=message):
        pipe.sample_z_set(k, seed=seed)


def test_a_given_half_overrides_the_seed_and_the_other_half_follows_it(pipe, ids):
    a = pipe(ids, seed=0)
    b = pipe(ids, seed=5, z_fg=a.z_fg)
    seed5 = pipe(ids, seed=5)
    assert torch.equal(b.z_fg, a.z_fg) and torch.equal(b.z_bg, seed5.z_bg)
    c = pipe(ids, seed=5, z_bg=a.z_bg.numpy()[None])  # (1, z_dim) NumPy works too
    assert torch.equal(c.z_bg, a.z_bg) and torch.equal(c.z_fg, seed5.z_fg)
    # Both halves given: the seed no longer matters and the video is reproduced exactly.
    d = pipe(ids, seed=123, z_fg=a.z_fg, z_bg=a.z_bg)
    np.testing.assert_array_equal(d.frames, a.frames)
    np.testing.assert_array_equal(d.flow_fwd, a.flow_fwd)


def test_motion_scale_zero_gives_zero_flow_and_scales_linearly(pipe, ids):
    still = pipe(ids, seed=2, motion_scale=0.0)
    assert np.abs(still.flow_fwd).max() == 0 and np.abs(still.flow_bwd).max() == 0
    full, half = pipe(ids, seed=2), pipe(ids, seed=2, motion_scale=0.5)
    assert np.abs(full.flow_bwd).max() > 0
    np.testing.assert_allclose(half.flow_bwd, 0.5 * full.flow_bwd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", [dict(semantics="none"), dict(semantics="one_encoder"), dict(use_flow=False)])
def test_model_variants_run_through_the_same_pipeline(ids, variant):
    pipe = Seg2VidPipeline(*tiny_models(**variant))
    a, b = pipe(ids, seed=0), pipe(ids, seed=1)
    assert a.frames.shape == (T + 1, *SIZE, 3) and a.flow_fwd.shape == (T, *SIZE, 2)
    assert a.z_fg.shape == (6,) and a.z_bg.shape == (3,)
    assert not np.array_equal(a.frames[1:], b.frames[1:])  # z still changes the video
    np.testing.assert_array_equal(pipe(ids, seed=0, z_fg=a.z_fg, z_bg=a.z_bg).frames, a.frames)


def test_returned_codes_are_ordinary_tensors(pipe, ids):
    z = pipe(ids, seed=0).z_fg
    assert not z.is_inference()
    assert (z.clone().requires_grad_() * 2).sum().requires_grad


# ---------------------------------------------------------------------------------------------------------------
# Caching


def test_resampling_runs_only_the_decoder(ids, monkeypatch):
    pipe = Seg2VidPipeline(*tiny_models())
    generator_calls = count_calls(pipe.image_generator)
    encode_calls = count_method(monkeypatch, pipe.flow_predictor, "encode_image")
    decode_calls = count_method(monkeypatch, pipe.flow_predictor, "decode")

    first = pipe(ids, seed=0)
    pipe(ids, seed=1)
    pipe(ids, seed=2, z_fg=first.z_fg)
    pipe(ids.copy(), seed=3, motion_scale=0.3)  # an equal map (another array) is a cache hit too
    np.testing.assert_array_equal(pipe.first_frame(ids), first.frames[0])
    assert (generator_calls[0], encode_calls[0], decode_calls[0]) == (1, 1, 4)

    other = ids.copy()
    other[0, 0] = (other[0, 0] + 1) % labels.NUM_CLASSES  # one pixel differs: a new entry
    pipe(other, seed=0)
    assert (generator_calls[0], encode_calls[0]) == (2, 2)


def test_first_frame_helper_runs_stage_one_only_and_is_reused(ids, monkeypatch):
    pipe = Seg2VidPipeline(*tiny_models())
    generator_calls = count_calls(pipe.image_generator)
    encode_calls = count_method(monkeypatch, pipe.flow_predictor, "encode_image")
    frame = pipe.first_frame(ids)
    assert frame.shape == (*SIZE, 3) and frame.dtype == np.uint8
    assert (generator_calls[0], encode_calls[0]) == (1, 0)
    out = pipe(ids, seed=0)
    np.testing.assert_array_equal(out.frames[0], frame)
    assert (generator_calls[0], encode_calls[0]) == (1, 1)


def test_cache_is_a_small_lru(monkeypatch):
    pipe = Seg2VidPipeline(*tiny_models(), cache_size=2)
    calls = count_calls(pipe.image_generator)
    maps = [blocky_label_map(s) for s in (1, 2, 3)]
    for m in maps:  # 1, 2, 3 → 1 is evicted
        pipe.first_frame(m)
    pipe.first_frame(maps[2])
    assert calls[0] == 3
    pipe.first_frame(maps[0])
    assert calls[0] == 4


def test_concurrent_calls_match_sequential_ones(ids):
    pipe = Seg2VidPipeline(*tiny_models())
    expected = {seed: pipe(ids, seed=seed).frames for seed in range(4)}
    pipe.clear_cache()
    results, errors = {}, []

    def work(seed):
        try:
            results[seed] = pipe(ids, seed=seed).frames
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for seed, frames in expected.items():
        np.testing.assert_array_equal(results[seed], frames)


# ---------------------------------------------------------------------------------------------------------------
# animate(): stage 2 from a real frame


def test_animate_uses_the_given_frame_and_skips_stage_one(ids, tmp_path, monkeypatch):
    pipe = Seg2VidPipeline(*tiny_models())
    generator_calls = count_calls(pipe.image_generator)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)  # twice the model size: resized (bicubic)
    expected_first = np.asarray(Image.fromarray(photo).resize((SIZE[1], SIZE[0]), Image.BICUBIC))

    out = pipe.animate(photo, ids, seed=0)
    assert generator_calls[0] == 0
    assert out.frames.shape == (T + 1, *SIZE, 3)
    np.testing.assert_array_equal(out.frames[0], expected_first)

    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    for frame in (Image.fromarray(photo), path, str(path)):
        np.testing.assert_array_equal(pipe.animate(frame, ids, seed=0).frames, out.frames)

    other = pipe.animate(photo[::-1].copy(), ids, seed=0)  # another frame, same label map: not a cache hit
    assert not np.array_equal(other.frames[0], out.frames[0])
    generated = pipe(ids, seed=0)  # the generated first frame is cached apart from the given one
    assert generator_calls[0] == 1 and not np.array_equal(generated.frames[0], out.frames[0])


@pytest.mark.parametrize(
    "frame, match",
    [
        (None, "first frame"),
        (np.zeros((32, 64), np.uint8), r"\(H, W, 3\) uint8"),
        (np.zeros((32, 64, 3), np.float32), "uint8"),
        ("/no/such/photo.jpg", "No first-frame image"),
        (42, "first frame"),
    ],
)
def test_animate_rejects_bad_frames(pipe, ids, frame, match):
    with pytest.raises(ValueError, match=match):
        pipe.animate(frame, ids)


# ---------------------------------------------------------------------------------------------------------------
# Saving, loading, resolution, device


def test_save_then_load_reproduces_the_output(pipe, ids, tmp_path):
    expected = pipe(ids, seed=4)
    pipe.save_pretrained(tmp_path / "model", model_card="# tiny\n")
    loaded = Seg2VidPipeline.from_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "README.md").read_text() == "# tiny\n"
    out = loaded(ids, seed=4)
    np.testing.assert_array_equal(out.frames, expected.frames)
    np.testing.assert_array_equal(out.flow_bwd, expected.flow_bwd)
    assert loaded.z_dims == pipe.z_dims and loaded.resolution == pipe.resolution


def test_default_checkpoint_folder(pipe, ids, tmp_path, monkeypatch):
    import seg2vid.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="bundled default model is missing"):
        Seg2VidPipeline.from_pretrained()
    pipe.save_pretrained(tmp_path / "checkpoints")
    loaded = Seg2VidPipeline.from_pretrained()
    np.testing.assert_array_equal(loaded(ids, seed=1).frames, pipe(ids, seed=1).frames)


def test_resolution_can_be_changed_to_another_multiple(ids):
    pipe = Seg2VidPipeline(*tiny_models())
    assert pipe.resolution == SIZE and SIZE[0] % pipe.size_multiple == 0
    pipe.resolution = (64, 128)
    out = pipe(ids, seed=0)  # the (32, 64) map is upsampled (nearest)
    assert out.frames.shape == (T + 1, 64, 128, 3) and out.flow_fwd.shape == (T, 64, 128, 2)
    np.testing.assert_array_equal(out.label_map, labels.resize_ids(ids, (64, 128)))
    with pytest.raises(ValueError, match="multiples of"):
        pipe.resolution = (40, 64)


def test_constructor_and_device_errors():
    with pytest.raises(ValueError, match="stage modules"):
        Seg2VidPipeline("generator", "predictor")
    with pytest.raises(ValueError, match="Unknown device"):
        Seg2VidPipeline(*tiny_models(), device="tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Seg2VidPipeline(*tiny_models(), device="cuda")
