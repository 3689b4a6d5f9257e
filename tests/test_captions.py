"""Captioned data: the caption grammar (deterministic, round-trips, reads free text), the measured attributes
and their bins on ``digits-text``/``mnist-text``, a user's captions (a folder's metadata.jsonl, an .npz's
``captions``) and prompt fidelity against its reference, chance level and shuffled floor."""
from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.data import Dataset, load_dataset
from fewstep.data.captions import ATTRIBUTES, MIN_SHARE, PHRASINGS, Bins, caption, measure, parse
from fewstep.data.dataset import Normaliser, make_dataset
from fewstep.errors import UserError
from fewstep.metrics import evaluate_samples, prompt_fidelity


@pytest.fixture(scope="module")
def digits_text() -> Dataset:
    return load_dataset("digits-text")


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory: pytest.TempPathFactory):
    """A fresh classifier cache for this module (the digits-text classifier trains once, ~5 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSTEP_CACHE", str(tmp_path_factory.mktemp("fewstep-cache")))
        yield


# --- the grammar -----------------------------------------------------------------------------------

def test_every_caption_parses_back_to_what_wrote_it() -> None:
    texts = set()
    for digit, phrasing in itertools.product(range(10), range(PHRASINGS)):
        for values in itertools.product((None, 0, 1, 2), repeat=len(ATTRIBUTES)):
            attrs = {name: v for name, v in zip(ATTRIBUTES, values) if v is not None}
            text = caption(digit, attrs, phrasing)
            assert parse(text) == {"digit": digit, **attrs}, text
            texts.add((phrasing, text))
    assert len(texts) == 10 * PHRASINGS * 4**3  # within a phrasing, no two combinations share a caption


def test_captions_read_as_english() -> None:
    full = {"thickness": 2, "slant": 2, "width": 2}
    assert caption(7, full, 0) == "a thick wide seven leaning right"
    assert caption(7, {"thickness": 0, "slant": 1}, 1) == "handwritten 7, thin and upright"
    assert caption(7, {"thickness": 1, "slant": 0}, 2) == "the digit seven, medium stroke, slanted left"
    assert caption(8, {"thickness": 2, "slant": 1}, 3) == "an 8 with a thick stroke, standing upright"
    assert caption(8, {"thickness": 0, "slant": 1}, 4) == "an upright thin 8"
    assert caption(1, {"width": 1}, 5) == "One: medium-width"
    with pytest.raises(ValueError):
        caption(10, {}, 0)
    with pytest.raises(ValueError):
        caption(3, {"colour": 1}, 0)


@pytest.mark.parametrize("text, expected", [
    ("A THICK 7, leaning LEFT!!", {"digit": 7, "thickness": 2, "slant": 0}),
    ("seven", {"digit": 7}),
    ("Draw something wide and thin.", {"width": 2, "thickness": 0}),
    ("medium-width, medium", {"width": 1, "thickness": 1}),
    ("a right-leaning 3", {"digit": 3, "slant": 2}),
    ("a 3 or an 8, upright", {"slant": 1}),            # two digits: ambiguous, not scored
    ("seven, i.e. 7", {"digit": 7}),                     # the same digit twice is no ambiguity
    ("thickness 17 pixels; lean unknown", {}),           # not grammar words: 'thickness', '17', 'lean'
    ("", {}),
])
def test_parse_reads_the_grammar_words_of_free_text(text: str, expected: dict) -> None:
    assert parse(text) == expected


# --- built-in captioned data -----------------------------------------------------------------------

def test_digits_text_is_digits_with_deterministic_captions(digits_text: Dataset) -> None:
    again, plain = load_dataset("digits-text"), load_dataset("digits")
    assert again.train_captions == digits_text.train_captions and again.heldout_captions == digits_text.heldout_captions
    assert torch.equal(plain.heldout, digits_text.heldout) and torch.equal(plain.train_labels, digits_text.train_labels)
    assert len(digits_text.train_captions) == len(digits_text.train) and len(digits_text.heldout_captions) == len(digits_text.heldout)
    for texts, labels in ((digits_text.train_captions, digits_text.train_labels), (digits_text.heldout_captions, digits_text.heldout_labels)):
        parsed = [parse(t) for t in texts]
        assert [p["digit"] for p in parsed] == labels.tolist()
        assert all(set(p) == {"digit", "thickness", "slant"} for p in parsed)
    words = " ".join(digits_text.train_captions)
    assert "seven" in words and " 7" in words  # digits in words and numerals
    assert json.loads(json.dumps(digits_text.meta["caption_bins"])) == digits_text.meta["caption_bins"]


def _shares(ds: Dataset, attribute: str) -> list[float]:
    bins = [parse(t)[attribute] for t in (*ds.train_captions, *ds.heldout_captions)]
    counts = Counter(bins)
    return [counts[b] / len(bins) for b in range(3)]


@pytest.mark.parametrize("attribute", ["thickness", "slant"])
def test_every_digits_text_bin_holds_a_fifth_of_the_images(digits_text: Dataset, attribute: str) -> None:
    shares = _shares(digits_text, attribute)
    assert min(shares) >= MIN_SHARE
    np.testing.assert_allclose(shares, digits_text.meta["caption_bins"]["shares"][attribute], atol=1e-4)
    # Terciles within each class: every class has every bin, roughly a third each, on the training split.
    parsed = [parse(t) for t in digits_text.train_captions]
    for digit in range(10):
        counts = Counter(p[attribute] for p in parsed if p["digit"] == digit)
        assert min(counts[b] for b in range(3)) / sum(counts.values()) > 0.3


def test_mnist_text_has_width_and_balanced_bins() -> None:  # ~5 s: reads MNIST
    ds = load_dataset("mnist-text")
    assert ds.meta["caption_bins"]["attributes"] == ["thickness", "slant", "width"]
    for attribute in ("thickness", "slant", "width"):
        assert min(_shares(ds, attribute)) >= MIN_SHARE
    assert torch.equal(ds.heldout_labels, torch.tensor([parse(t)["digit"] for t in ds.heldout_captions]))


def test_bins_are_terciles_within_each_class() -> None:
    values = {"thickness": np.concatenate([np.arange(30.0), 100 + np.arange(30.0)])}
    labels = np.repeat([0, 1], 30)
    bins = Bins.fit(values, labels, 2)
    assigned = bins.assign(values, labels)["thickness"]
    assert assigned.tolist() == [*np.repeat([0, 1, 2], 10)] * 2  # class 1's thin is class 0's thick
    assert Bins.from_dict(json.loads(json.dumps(bins.to_dict()))).assign(values, labels)["thickness"].tolist() == assigned.tolist()


# --- the measurement ---------------------------------------------------------------------------------

def _shear(x: torch.Tensor, k: float) -> torch.Tensor:
    """Images [N, 1, H, W] in model units, each row moved k px to the right per row above the centre."""
    p = (x.numpy()[:, 0] + 1.0) / 2.0
    n, h, w = p.shape
    cols = np.arange(w, dtype=np.float64)
    out = np.zeros_like(p)
    for r in range(h):
        shift = k * ((h - 1) / 2 - r)
        for i in range(n):
            out[i, r] = np.interp(cols - shift, cols, p[i, r], left=0.0, right=0.0)
    return torch.from_numpy(out[:, None] * 2.0 - 1.0).float()


def test_a_sheared_bar_leans_the_way_it_was_sheared() -> None:
    bar = -torch.ones(1, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1.0
    upright, right, left = (measure(_shear(bar, k))["slant"][0] for k in (0.0, 0.4, -0.4))
    assert upright == pytest.approx(0.0, abs=1e-12) and right == pytest.approx(0.4, abs=0.02) and left == pytest.approx(-0.4, abs=0.02)


def test_measured_attributes_follow_shear_dilation_and_units(digits_text: Dataset) -> None:
    x = digits_text.heldout[:200]
    before = measure(x)
    assert np.all(measure(_shear(x, 0.5))["slant"] > before["slant"])
    assert np.all(measure(_shear(x, 0.5))["slant"] > 0) and np.all(measure(_shear(x, -0.5))["slant"] < 0)
    dilated = measure(torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1))
    assert np.all(dilated["thickness"] > before["thickness"]) and np.all(dilated["width"] > before["width"])
    as_uint8 = measure(torch.round((x + 1.0) * 127.5).to(torch.uint8))  # uint8 and model units agree
    for name in ATTRIBUTES:
        np.testing.assert_allclose(as_uint8[name], before[name], rtol=1e-6, atol=1e-6)
    blank = measure(-torch.ones(2, 1, 8, 8))
    assert all(np.all(v == 0.0) for v in blank.values())


# --- prompt fidelity -----------------------------------------------------------------------------------

def test_real_images_score_exactly_against_their_own_captions(digits_text: Dataset, classifier_cache) -> None:
    r = prompt_fidelity(digits_text, digits_text.heldout, digits_text.heldout_captions, seed=0)
    for name in ("thickness", "slant"):
        assert r[f"fidelity_{name}"] == 1.0 and r[f"fidelity_{name}_reference"] == 1.0
        assert 1 / 3 <= r[f"fidelity_{name}_chance"] < 0.34
        assert r[f"fidelity_{name}_shuffled"] < 0.5  # the floor: well below the 1.0 of the right prompts
    assert r["fidelity_digit"] == r["fidelity_digit_reference"] > 0.9
    assert r["fidelity_digit_chance"] < 0.11 and r["fidelity_digit_shuffled"] < 0.2
    assert "fidelity_width" not in r  # digits-text has no width
    # The same through evaluate_samples; without prompts it reports no fidelity.
    report = evaluate_samples(digits_text, digits_text.heldout, prompts=list(digits_text.heldout_captions))
    assert {k: report[k] for k in r} == r
    assert not any(k.startswith("fidelity") for k in evaluate_samples(digits_text, digits_text.heldout[:50]))


def test_prompts_are_scored_only_on_what_they_name(digits_text: Dataset, classifier_cache) -> None:
    n = 60
    x = digits_text.heldout[:n]
    prompts = [f"the digit {t}" for t in digits_text.heldout_labels[:n].tolist()]  # no attributes named
    r = prompt_fidelity(digits_text, x, prompts)
    assert set(r) == {"fidelity_digit", "fidelity_digit_reference", "fidelity_digit_chance", "fidelity_digit_shuffled"}
    thick = prompt_fidelity(digits_text, x, ["thick"] * n)  # no digit: bins of the class the classifier sees
    assert set(thick) == {f"fidelity_thickness{s}" for s in ("", "_reference", "_chance", "_shuffled")}
    assert 0.0 < thick["fidelity_thickness"] < 1.0
    with pytest.raises(ValueError, match="prompts"):
        prompt_fidelity(digits_text, x, prompts[:-1])


# --- a user's captions -----------------------------------------------------------------------------------

def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8), mode="L").save(path)


def _write_jsonl(path: Path, records: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")


def _captioned_folder(root: Path, n: int = 12, sub: str = "") -> Path:
    """n PNGs whose grey value (10·i) is told by their caption, listed in reverse order."""
    records = []
    for i in range(n):
        name = f"{sub}img{i:02d}.png"
        _png(root / name, 10 * i)
        records.append({"file_name": name, "text": f"grey {10 * i}"})
    _write_jsonl(root / "metadata.jsonl", records[::-1])
    return root


def _assert_captions_match_images(ds: Dataset) -> None:
    for x, texts in ((ds.train, ds.train_captions), (ds.heldout, ds.heldout_captions)):
        grey = np.rint((x.numpy().reshape(len(x), -1).mean(1) * ds.normaliser.scale[0]) + ds.normaliser.shift[0])
        assert [f"grey {int(g)}" for g in grey] == list(texts)


def test_metadata_jsonl_folder_gives_aligned_captions(tmp_path: Path, classifier_cache) -> None:
    ds = load_dataset(str(_captioned_folder(tmp_path)))
    assert len(ds.train) + len(ds.heldout) == 12 and ds.train_labels is None
    _assert_captions_match_images(ds)
    assert prompt_fidelity(ds, ds.heldout, ds.heldout_captions) == {}  # free captions: no grammar to score


def test_metadata_jsonl_takes_precedence_over_class_folders(tmp_path: Path) -> None:
    records = []
    for cls, start in (("cats", 0), ("dogs", 6)):
        for i in range(start, start + 6):
            _png(tmp_path / cls / f"{i}.png", 10 * i)
            records.append({"file_name": f"{cls}/{i}.png", "text": f"grey {10 * i}", "extra": 1})
    _write_jsonl(tmp_path / "metadata.jsonl", records)
    ds = load_dataset(str(tmp_path))
    assert ds.train_captions is not None and ds.class_names == ("cats", "dogs")
    _assert_captions_match_images(ds)
    labels = torch.cat([ds.train_labels, ds.heldout_labels]).tolist()
    texts = [*ds.train_captions, *ds.heldout_captions]
    assert all(label == (int(t.split()[1]) >= 60) for label, t in zip(labels, texts))  # labels stay their folders'
    assert load_dataset(str(tmp_path / "cats")).train_captions is None  # no metadata.jsonl: no captions


def test_a_streamed_captioned_folder_keeps_its_captions(tmp_path: Path) -> None:
    folder = _captioned_folder(tmp_path, n=8)
    for i in range(8, 12):  # images in a sub-folder too: the folder's metadata.jsonl lists them
        _png(folder / "more" / f"img{i:02d}.png", 10 * i)
    _write_jsonl(folder / "metadata.jsonl", [{"file_name": f"{'more/' if i >= 8 else ''}img{i:02d}.png", "text": f"grey {10 * i}"}
                                             for i in range(12)])
    memory, streamed = load_dataset(str(folder)), load_dataset(str(folder), loader="stream")
    assert streamed.meta["loader"] == "stream" and memory.train_labels is None
    assert torch.equal(streamed.heldout, memory.heldout) and torch.equal(streamed.train[:], memory.train)
    assert streamed.train_captions == memory.train_captions and streamed.heldout_captions == memory.heldout_captions
    _assert_captions_match_images(memory)


@pytest.mark.parametrize("damage, expected", [
    (lambda r: r.__setitem__(2, {"file_name": "nope.png", "text": "x"}), "line 3: 'nope.png' does not exist"),
    (lambda r: r.__setitem__(2, {**r[0]}), "line 3: 'img11.png' is listed already on line 1"),
    (lambda r: r.__setitem__(2, {"text": "x"}), "line 3: no 'file_name'"),
    (lambda r: r.__setitem__(2, {"file_name": r[2]["file_name"]}), "line 3: no 'text'"),
    (lambda r: r.__setitem__(2, {**r[2], "text": 7}), "line 3: 'text' must be a string, got int"),
    (lambda r: r.__setitem__(2, '{"file_name": "img09.png", "text": '), "line 3: not valid JSON"),
    (lambda r: r.__setitem__(2, "[1, 2]"), "line 3: expected a JSON object"),
    (lambda r: r.__setitem__(2, {"file_name": "../img.png", "text": "x"}), "line 3: '../img.png' is outside the folder"),
    (lambda r: r.pop(2), "img09.png has no line"),
])
def test_a_bad_metadata_jsonl_is_refused_in_one_line(tmp_path: Path, damage, expected: str) -> None:
    folder = _captioned_folder(tmp_path / "data")
    records = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    damage(records)
    _write_jsonl(folder / "metadata.jsonl", records)
    with pytest.raises(UserError) as err:
        load_dataset(str(folder))
    message = str(err.value)
    assert "\n" not in message and message.startswith("data: ") and "metadata.jsonl" in message
    assert expected in message


def test_npz_captions(tmp_path: Path) -> None:
    n = 20
    images = (np.arange(n, dtype=np.uint8) * 10)[:, None, None, None].repeat(6, 1).repeat(6, 2)  # [N, 6, 6, 1]
    texts = np.array([f"grey {10 * i}" for i in range(n)], dtype=str)
    np.savez(tmp_path / "good.npz", x=images, labels=np.arange(n) % 2, captions=texts)
    ds = load_dataset(str(tmp_path / "good.npz"))
    _assert_captions_match_images(ds)
    assert ds.train_labels is not None  # labels stay
    assert load_dataset(str(tmp_path / "good.npz")).heldout_captions == ds.heldout_captions

    def refused(name: str, **arrays) -> str:
        np.savez(tmp_path / name, x=images, **arrays)
        with pytest.raises(UserError) as err:
            load_dataset(str(tmp_path / name))
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "dtype=str" in refused("object.npz", captions=texts.astype(object))
    assert "one string per example (20)" in refused("short.npz", captions=texts[:-1])
    assert "one string per example" in refused("square.npz", captions=texts.reshape(4, 5))
    assert "unicode" in refused("bytes.npz", captions=texts.astype(bytes))


def test_make_dataset_splits_captions_like_labels() -> None:
    x = np.arange(50, dtype=np.float32)[:, None].repeat(2, 1)
    texts = [f"row {i}" for i in range(50)]
    ds = make_dataset("rows", x, Normaliser("points", (0.0, 0.0), (1.0, 1.0)), np.arange(50) % 3, captions=texts)
    assert [f"row {int(v)}" for v in ds.heldout[:, 0]] == list(ds.heldout_captions)
    assert [f"row {int(v)}" for v in ds.train[:, 0]] == list(ds.train_captions)
    with pytest.raises(ValueError):
        make_dataset("rows", x, Normaliser("points", (0.0, 0.0), (1.0, 1.0)), captions=texts[:-1])
