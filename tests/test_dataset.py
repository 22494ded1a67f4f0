"""SynthCityDataset: tensors, shapes, conventions, disk vs on-the-fly, held-out seeds."""

import numpy as np
import pytest
import torch

from seg2vid.data.dataset import HELDOUT_SEED_START, SynthCityDataset
from seg2vid.data.synthcity.writer import write_dataset
from seg2vid.labels import NUM_CLASSES, one_hot
from seg2vid.warp import warp

SIZE = (32, 64)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthcity")
    write_dataset(root, range(2, 4), size=SIZE, num_frames=5, progress=False)
    return root


def test_item_shapes_types_and_ranges():
    item = SynthCityDataset(seeds=[7], size=SIZE, num_frames=5)[0]
    H, W = SIZE
    assert item["video"].shape == (5, 3, H, W) and item["video"].dtype == torch.float32
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and item["video"].std() > 0.05
    assert item["labels"].shape == (5, H, W) and item["labels"].dtype == torch.long
    assert item["heatmaps"].shape == (NUM_CLASSES, H, W)
    assert torch.equal(item["heatmaps"], one_hot(item["labels"][0]))
    for k in ("flow_fwd", "flow_bwd"):
        assert item[k].shape == (4, 2, H, W)
    for k in ("occ_fwd", "occ_bwd"):
        assert item[k].shape == (4, 1, H, W) and set(item[k].unique().tolist()) <= {0.0, 1.0}
    assert item["seed"].item() == 7


def test_tensors_follow_the_flow_convention():
    item = SynthCityDataset(seeds=[8], size=(48, 96), num_frames=5)[0]
    v = item["video"]
    # Backward flow: I_t ≈ warp(I_0, w^b_t) where occ_bwd = 1; in [-1, 1] units the bar is twice 0.04.
    err = (warp(v[:1].expand(4, -1, -1, -1), item["flow_bwd"]) - v[1:]).abs().mean(1, keepdim=True)
    assert err[item["occ_bwd"] > 0].mean() < 0.08
    err = (warp(v[1:], item["flow_fwd"]) - v[:1]).abs().mean(1, keepdim=True)
    assert err[item["occ_fwd"] > 0].mean() < 0.08


def test_disk_and_on_the_fly_agree(disk):
    a = SynthCityDataset(disk, seeds=[3], size=SIZE, num_frames=5)[0]
    b = SynthCityDataset(None, seeds=[3], size=SIZE, num_frames=5)[0]
    for k in ("video", "labels", "heatmaps", "occ_fwd", "occ_bwd", "seed"):
        assert torch.equal(a[k], b[k]), k
    for k in ("flow_fwd", "flow_bwd"):  # stored as float16
        assert torch.allclose(a[k], b[k], atol=0.05, rtol=1e-3), k


def test_works_with_a_dataloader(disk):
    ds = SynthCityDataset(disk, seeds=range(2, 4), size=SIZE, num_frames=5)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["video"].shape == (2, 5, 3, *SIZE) and batch["seed"].tolist() == [2, 3]


def test_rejects_bad_roots_and_held_out_seeds(disk, tmp_path):
    with pytest.raises(ValueError, match="held out"):
        SynthCityDataset(seeds=[HELDOUT_SEED_START + 1], size=SIZE)
    assert len(SynthCityDataset(seeds=[HELDOUT_SEED_START], size=SIZE, allow_heldout=True)) == 1
    with pytest.raises(ValueError, match="meta.json"):
        SynthCityDataset(tmp_path, seeds=[0], size=SIZE)
    with pytest.raises(ValueError, match="missing"):
        SynthCityDataset(disk, seeds=range(0, 4), size=SIZE, num_frames=5)
    with pytest.raises(ValueError, match="asked for"):
        SynthCityDataset(disk, seeds=[2], size=(64, 128), num_frames=5)
    with pytest.raises(ValueError):
        SynthCityDataset(seeds=[], size=SIZE)
    assert not np.isnan(SynthCityDataset(disk, seeds=[2], size=SIZE, num_frames=5)[0]["flow_bwd"].numpy()).any()
