"""Checkpoint folders: round trips, strict loading, readable errors, Hub repo ids offline."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from seg2vid.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    load_pipeline,
    load_stage,
    read_stage_config,
    resolve_pretrained,
    save_pipeline,
    save_stage,
)
from seg2vid.config import ImageGeneratorConfig
from seg2vid.networks.image_generator import ImageGenerator
from test_pipeline import tiny_models


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture
def stage(models, tmp_path):
    """A saved stage-1 checkpoint folder."""
    return save_stage(models[0], tmp_path / "image_generator", metadata={"steps": 1234})


def _equal_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage_round_trip(models, stage):
    image_generator, _ = models
    assert sorted(p.name for p in stage.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary files left
    record = json.loads((stage / CONFIG_NAME).read_text())
    assert record["class"] == "ImageGenerator" and record["format_version"] == 1
    assert record["metadata"] == {"steps": 1234}

    loaded = load_stage(stage, ImageGenerator)
    assert type(loaded) is ImageGenerator and not loaded.training
    assert loaded.config == image_generator.config
    assert _equal_state(loaded, image_generator)
    class_name, config, metadata = read_stage_config(stage)
    assert (class_name, config, metadata) == ("ImageGenerator", image_generator.config, {"steps": 1234})


def test_pipeline_round_trip_and_overwrite(models, tmp_path):
    image_generator, flow_predictor = models
    folder = save_pipeline(image_generator, flow_predictor, tmp_path / "pipe", model_card="# card\n")
    save_pipeline(image_generator, flow_predictor, folder)  # overwriting an existing folder works
    ig, fp = load_pipeline(folder)
    assert _equal_state(ig, image_generator) and _equal_state(fp, flow_predictor)
    assert (folder / "README.md").read_text() == "# card\n"
    leftovers = [p.name for p in folder.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_wrong_class_is_refused(stage):
    with pytest.raises(CheckpointError, match="holds weights of class ImageGenerator, but FlowPredictor was expected"):
        load_stage(stage, "FlowPredictor")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_folder_and_files(stage, tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint folder"):
        load_stage(tmp_path / "nowhere")
    (stage / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_NAME}"):
        load_stage(stage)
    (stage / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"holds no {CONFIG_NAME}"):
        load_stage(stage)


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object with keys 'class' and 'config'"),
        ('{"class": "Transformer", "config": {}}', "names class 'Transformer'"),
        ('{"class": "ImageGenerator", "config": {"base_channels": 4, "wings": 2}}', "wings"),
        ('{"class": "ImageGenerator", "config": {"base_channels": "four"}}', "base_channels"),
        ('{"class": "ImageGenerator", "config": [1]}', "must be a JSON object"),
        ('{"class": "ImageGenerator", "format_version": 99, "config": {}}', "format_version 99"),
    ],
)
def test_bad_config_json(stage, text, match):
    (stage / CONFIG_NAME).write_text(text)
    with pytest.raises(CheckpointError, match=match) as info:
        load_stage(stage)
    assert str(stage) in str(info.value)  # the message says which checkpoint


def test_corrupt_and_truncated_weights(stage):
    weights = stage / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_stage(stage)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_stage(stage)


def test_config_that_does_not_match_the_weights(stage):
    record = json.loads((stage / CONFIG_NAME).read_text())
    record["config"]["base_channels"] = 6  # other widths than the saved tensors
    (stage / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="shape mismatches: .*in the file vs") as info:
        load_stage(stage)
    assert "stem" in str(info.value)  # names the offending tensors


def test_missing_and_unexpected_tensors(stage):
    weights = stage / WEIGHTS_NAME
    tensors = load_file(weights)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError) as info:
        load_stage(stage)
    message = str(info.value)
    assert f"missing tensors: {dropped}" in message and "unexpected tensors: extra.weight" in message


def test_pipeline_folder_without_a_stage(models, tmp_path):
    save_stage(models[0], tmp_path / "pipe" / "image_generator")
    with pytest.raises(CheckpointError, match="flow_predictor/"):
        load_pipeline(tmp_path / "pipe")


def test_swapped_stage_folders_are_refused(models, tmp_path):
    save_stage(models[0], tmp_path / "pipe" / "flow_predictor")
    save_stage(models[1], tmp_path / "pipe" / "image_generator")
    with pytest.raises(CheckpointError, match="class FlowPredictor, but ImageGenerator was expected"):
        load_pipeline(tmp_path / "pipe")


def test_unsaveable_model(tmp_path):
    with pytest.raises(CheckpointError, match="Cannot save a Linear"):
        save_stage(torch.nn.Linear(2, 2), tmp_path / "x")
    model = ImageGenerator(ImageGeneratorConfig(base_channels=4, num_downsample=1, num_res_blocks=0))
    with pytest.raises(CheckpointError, match="JSON"):
        save_stage(model, tmp_path / "y", metadata={"when": object()})
    assert not (tmp_path / "y" / CONFIG_NAME).exists()


# ---------------------------------------------------------------------------------------------------------------
# Folders and Hub repo ids


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_resolve_existing_folder_file_and_bad_path(stage, tmp_path):
    assert resolve_pretrained(stage) == stage
    assert resolve_pretrained(str(stage)) == stage
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_pretrained(stage / CONFIG_NAME)
    with pytest.raises(CheckpointError, match="not a Hugging Face Hub repo id"):
        resolve_pretrained(tmp_path / "no" / "such" / "folder")


def test_unknown_repo_id_offline_fails_fast_and_clearly(offline):
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        resolve_pretrained("seg2vid-nobody/no-such-model")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "seg2vid-nobody/no-such-model" in message and "HF_HUB_OFFLINE" in message


def test_repo_id_from_the_local_hub_cache(models, tmp_path, monkeypatch, offline):
    """A repo id in the Hugging Face cache loads offline like a folder (cache layout of huggingface_hub)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-seg2vid"
    save_pipeline(*models, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)

    folder = resolve_pretrained("someone/tiny-seg2vid")
    assert folder.resolve() == (repo / "snapshots" / commit).resolve()
    image_generator, flow_predictor = load_pipeline("someone/tiny-seg2vid")
    assert _equal_state(image_generator, models[0]) and _equal_state(flow_predictor, models[1])
