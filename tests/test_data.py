"""Data sets: built-ins, a user's .npy/.npz/image folder, the fixed held-out split and the map back
to data units (points un-standardised exactly, images to uint8 [N, H, W, C])."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.data import load_dataset
from fewstep.errors import UserError

TOYS = ("moons", "swissroll", "checkerboard", "gaussians8")


def all_model_units(ds) -> torch.Tensor:
    return torch.cat([ds.train, ds.heldout])


def assert_fixed_split(path: Path) -> None:
    a, b = load_dataset(str(path)), load_dataset(str(path))
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)


def match_rows(rows: np.ndarray, original: np.ndarray) -> np.ndarray:
    """For each row, the index of the original row it equals (to float32 precision); fails if none does."""
    dist = np.abs(rows[:, None, :].astype(np.float64) - original[None, :, :]).max(-1)  # [M, N]
    idx = dist.argmin(1)
    assert np.all(dist[np.arange(len(rows)), idx] <= 1e-5 * (1 + np.abs(original).max())), "a row does not map back"
    return idx


# --- built-ins -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TOYS)
def test_toy_loads_standardised_2d_points(name: str) -> None:
    ds = load_dataset(name)
    assert ds.kind == "points" and ds.shape == (2,) and ds.name == name
    assert len(ds.train) == 20_000 and len(ds.heldout) == 5_000
    x = all_model_units(ds).double()
    torch.testing.assert_close(x.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(2, dtype=torch.float64), atol=0.05, rtol=0)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", TOYS)
def test_toy_round_trips_to_data_units(name: str) -> None:
    ds = load_dataset(name)
    data = ds.to_data_units(ds.heldout)                   # [N, 2], the data's own units
    mean, std = np.asarray(ds.normaliser.shift), np.asarray(ds.normaliser.scale)
    np.testing.assert_allclose((data - mean) / std, ds.heldout.numpy(), atol=1e-5)
    if name == "moons":  # sklearn's moons live in [-1, 2] x [-0.5, 1]
        assert data[:, 0].min() > -1.5 and data[:, 0].max() < 2.5 and data[:, 1].min() > -1.0 and data[:, 1].max() < 1.5
        assert data[:, 0].max() - data[:, 0].min() > 2.5  # not standardised units


def test_builtin_split_is_fixed_and_disjoint() -> None:
    a, b = load_dataset("moons"), load_dataset("moons")
    assert torch.equal(a.heldout, b.heldout) and torch.equal(a.train, b.train)
    # No held-out point also appears in the training split.
    train = {tuple(r) for r in a.train.numpy().round(6).tolist()}
    assert not any(tuple(r) in train for r in a.heldout.numpy().round(6).tolist()[:500])


def test_digits_are_labelled_images_in_unit_range() -> None:
    ds = load_dataset("digits")
    assert ds.kind == "images" and ds.shape == (1, 8, 8)
    assert len(ds.train) + len(ds.heldout) == 1797 and len(ds.heldout) == round(0.2 * 1797)
    assert ds.num_classes == 10 and len(ds.train_labels) == len(ds.train) and len(ds.heldout_labels) == len(ds.heldout)
    x = all_model_units(ds)
    assert x.min() == -1.0 and x.max() == 1.0
    back = ds.to_data_units(ds.heldout[:5])
    assert back.dtype == np.uint8 and back.shape == (5, 8, 8, 1)
    assert torch.equal(load_dataset("digits").heldout, ds.heldout)


def test_mnist_loads() -> None:  # ~5 s: the only test that reads MNIST
    ds = load_dataset("mnist")
    assert ds.kind == "images" and ds.shape == (1, 28, 28)
    assert len(ds.train) + len(ds.heldout) == 5000 and ds.num_classes == 10
    assert ds.train.min() >= -1.0 and ds.train.max() <= 1.0 and ds.train.min() < -0.99 and ds.train.max() > 0.99


# --- a user's points -------------------------------------------------------------------------

def test_user_points_npy_standardised_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    original = rng.normal([5.0, -3.0, 100.0], [2.0, 0.1, 30.0], size=(300, 3))  # float64, odd units
    path = tmp_path / "pts.npy"
    np.save(path, original)
    ds = load_dataset(str(path))
    assert ds.kind == "points" and ds.shape == (3,) and len(ds.heldout) == 30 and len(ds.train) == 270
    x = all_model_units(ds).double()
    torch.testing.assert_close(x.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    # Back to data units: every row is one of the original rows, and train + held-out is a partition.
    idx = np.concatenate([match_rows(ds.to_data_units(ds.train), original), match_rows(ds.to_data_units(ds.heldout), original)])
    assert sorted(idx.tolist()) == list(range(300))
    np.testing.assert_allclose(ds.to_data_units(ds.heldout), original[match_rows(ds.to_data_units(ds.heldout), original)], rtol=1e-6, atol=1e-5)
    assert_fixed_split(path)


def test_split_indices_do_not_depend_on_the_values(tmp_path: Path) -> None:
    """The held-out rows are chosen by position alone: the same indices for any file of N rows."""
    n = 200
    a = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a[::-1].copy() * 3.0 + 1.0)
    ia = match_rows(load_dataset(str(tmp_path / "a.npy")).to_data_units(load_dataset(str(tmp_path / "a.npy")).heldout), a)
    b_ds = load_dataset(str(tmp_path / "b.npy"))
    ib = match_rows(b_ds.to_data_units(b_ds.heldout), a[::-1] * 3.0 + 1.0)
    assert sorted(ia.tolist()) == sorted(ib.tolist())


def test_constant_column_stays_finite(tmp_path: Path) -> None:
    arr = np.stack([np.linspace(0, 1, 50), np.full(50, 7.0)], axis=1)
    np.save(tmp_path / "c.npy", arr)
    ds = load_dataset(str(tmp_path / "c.npy"))
    assert torch.isfinite(all_model_units(ds)).all()
    np.testing.assert_allclose(np.sort(ds.to_data_units(all_model_units(ds))[:, 1]), np.full(50, 7.0), rtol=1e-6)


@pytest.mark.parametrize("key", ["x", "data", "samples", "only"])
def test_user_npz(tmp_path: Path, key: str) -> None:
    arr = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    extra = {} if key == "only" else {"labels": np.zeros(40, dtype=np.int64)}  # read as one class
    np.savez(tmp_path / "d.npz", **{key: arr}, **extra)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.kind == "points" and ds.shape == (2,)
    match_rows(ds.to_data_units(ds.heldout), arr)


# --- a user's images -------------------------------------------------------------------------

def _uint8_images(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize(
    "shape, layout",
    [((20, 8, 6), "NHW"), ((20, 3, 8, 6), "NCHW"), ((20, 8, 6, 3), "NHWC"), ((20, 1, 8, 6), "NCHW"),
     ((20, 8, 6, 1), "NHWC"), ((20, 4, 8, 6), "NCHW"), ((20, 8, 6, 4), "NHWC")],
)
def test_uint8_image_layouts_round_trip(tmp_path: Path, shape: tuple[int, ...], layout: str) -> None:
    arr = _uint8_images(shape)
    np.save(tmp_path / "im.npy", arr)
    ds = load_dataset(str(tmp_path / "im.npy"))
    nhwc = arr[..., None] if layout == "NHW" else arr.transpose(0, 2, 3, 1) if layout == "NCHW" else arr
    assert ds.kind == "images" and ds.shape == (nhwc.shape[3], 8, 6)
    x = all_model_units(ds)
    assert x.min() >= -1.0 and x.max() <= 1.0
    back = ds.to_data_units(x)
    assert back.dtype == np.uint8 and back.shape == nhwc.shape
    # Exact: every image maps back to one of the originals, and train + held-out cover them all.
    flat = nhwc.reshape(len(nhwc), -1).astype(np.float64)
    idx = match_rows(back.reshape(len(back), -1), flat)
    assert sorted(idx.tolist()) == list(range(len(arr)))
    assert_fixed_split(tmp_path / "im.npy")


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_float_image_ranges(tmp_path: Path, lo: float, hi: float) -> None:
    k = _uint8_images((12, 1, 5, 5))
    arr = (lo + k.astype(np.float64) * (hi - lo) / 255.0).astype(np.float32)  # exactly 256 levels
    np.save(tmp_path / "f.npy", arr)
    ds = load_dataset(str(tmp_path / "f.npy"))
    x = all_model_units(ds)
    assert x.min() >= -1.0 and x.max() <= 1.0
    back = ds.to_data_units(x)
    assert back.dtype == np.uint8 and back.shape == (12, 5, 5, 1)
    idx = match_rows(back.reshape(12, -1), k.transpose(0, 2, 3, 1).reshape(12, -1).astype(np.float64))
    assert sorted(idx.tolist()) == list(range(12))


def test_image_folder_png_gray_and_rgb(tmp_path: Path) -> None:
    gray, rgb = _uint8_images((6, 7, 5)), _uint8_images((6, 7, 5, 3))
    (tmp_path / "g").mkdir()
    (tmp_path / "c").mkdir()
    for i in range(6):
        Image.fromarray(gray[i], "L").save(tmp_path / "g" / f"{i:02d}.png")
        Image.fromarray(rgb[i], "RGB").save(tmp_path / "c" / f"{i:02d}.PNG")
    for folder, original in (("g", gray[..., None]), ("c", rgb)):
        ds = load_dataset(str(tmp_path / folder))
        assert ds.kind == "images" and ds.shape == (original.shape[3], 7, 5)
        back = ds.to_data_units(all_model_units(ds))
        idx = match_rows(back.reshape(6, -1), original.reshape(6, -1).astype(np.float64))
        assert sorted(idx.tolist()) == list(range(6))
        assert_fixed_split(tmp_path / folder)


def test_image_folder_jpeg_and_rgba(tmp_path: Path) -> None:
    rgb = _uint8_images((4, 8, 8, 3))
    for i in range(4):
        Image.fromarray(rgb[i], "RGB").save(tmp_path / f"{i}.jpg", quality=95)
    Image.fromarray(np.dstack([rgb[0], np.full((8, 8), 255, np.uint8)]), "RGBA").save(tmp_path / "4.png")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path))
    assert ds.kind == "images" and ds.shape == (3, 8, 8) and len(ds.train) + len(ds.heldout) == 5
    x = all_model_units(ds)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_ambiguous_layout_is_refused_with_a_hint(tmp_path: Path) -> None:
    for shape in ((5, 3, 8, 3), (5, 1, 8, 4), (5, 5, 8, 7)):
        np.save(tmp_path / "amb.npy", np.zeros(shape, np.uint8))
        with pytest.raises(UserError) as info:
            load_dataset(str(tmp_path / "amb.npy"))
        message = str(info.value)
        assert message.startswith("data: ") and "amb.npy" in message and str(list(shape)) in message
        assert "transpose" in message and "\n" not in message
