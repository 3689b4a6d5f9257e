"""Captions of the built-ins ``digits-text`` and ``mnist-text``: written from each image's digit and measured
attributes by a small grammar that :func:`parse` reads back; the same measurement scores samples
(:func:`fewstep.metrics.fidelity.prompt_fidelity`). The grammar is documented in full in docs/captions.md.

Attributes, each measured by :func:`measure` on ink intensity p ∈ [0, 1] (uint8 / 255, or (x + 1) / 2 for
model units; channels averaged; p < 0.05 counts as paper, so a sample's faint background is not ink):

    thickness  ink mass Σ p                                  0 thin    1 medium        2 thick
    slant      shear μ11/μ02 of the ink (x right, y up)      0 left    1 upright       2 right
    width      bounding-box width where the column maximum   0 narrow  1 medium-width  2 wide
               of p crosses 1/2, to a sub-pixel (mnist-text only)

Bins are terciles computed *within each digit class* on the training split (:class:`Bins`): ink mass and
width depend on the digit (a 1 has less ink than an 8), so bins over all images would mostly restate it.
Bounding-box height and vertical position are no attributes: on sklearn's digits they are constant
(height 8 px in 99.7% of images), on MNIST it is 20 px in 85% of images (where p > 1/2).

Phrasings (0–5; an image's is drawn by a fixed-seed generator, not its index, since sklearn's digits come
in label order and an index rule would tie phrasing to digit). Shown with every attribute; a missing one
is left out with its words:

    0  a thick wide seven leaning right
    1  handwritten 7, thick, wide and slanted right
    2  the digit seven, thick stroke, wide, slanted right
    3  a 7 with a thick stroke, wide, leaning right
    4  a right-leaning thick wide 7
    5  Seven: thick stroke, wide, leaning right

Slant reads "leaning left/right" or "standing upright" (0, 3, 5), "slanted left/right" or "upright"
(1, 2), "left-leaning/upright/right-leaning" (4). Digits appear as words (0, 2, 5) or numerals (1, 3, 4).

:func:`parse` reads any text: lower-cased, split into runs of letters and runs of numerals (so case,
punctuation and hyphens do not matter), it looks for these words: ``zero`` … ``nine`` or a one-numeral
token ``0`` … ``9`` (digit); ``thin``, ``medium``, ``thick`` (thickness; ``medium`` followed by
``width`` is the width); ``narrow``, ``medium width``, ``wide`` (width); ``left``, ``upright``, ``right``
(slant). Every other word is ignored. An element the text names with two different values is ambiguous
and left out, as is one it does not name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

ATTRIBUTES = ("thickness", "slant", "width")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "medium", "thick")
WIDTH = ("narrow", "medium-width", "wide")
LEANING = ("leaning left", "standing upright", "leaning right")
SLANTED = ("slanted left", "upright", "slanted right")
LEANING_ADJECTIVE = ("left-leaning", "upright", "right-leaning")
PHRASINGS = 6
PHRASING_SEED = 11  # which phrasing each image gets: part of the data set
INK_FLOOR = 0.05    # intensities below count as paper
EDGE = 0.5          # the bounding box is where the ink's column maximum crosses this
MIN_SHARE = 0.2     # every bin must hold at least this share of a captioned data set's images


# --- measuring ---------------------------------------------------------------------------------------

def intensity(images: Any) -> np.ndarray:
    """Images [N, C, H, W] or [N, H, W] (uint8, or floats in model units [−1, 1]; a Tensor or an array) →
    ink intensity in [0, 1], float64 [N, H, W], channels averaged."""
    x = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if x.ndim not in (3, 4):
        raise ValueError(f"measure: expected images [N, C, H, W] or [N, H, W], got shape {list(x.shape)}")
    p = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else (x.astype(np.float64) + 1.0) / 2.0
    p = p.mean(1) if p.ndim == 4 else p
    return np.ascontiguousarray(np.clip(p, 0.0, 1.0))


def measure(images: Any) -> dict[str, np.ndarray]:
    """Per-image raw attributes (float64 [N] each): ``thickness``, ``slant``, ``width`` (module docstring).
    Elementwise products and row sums only (no matrix products), so an image's values do not depend on
    the batch it is measured in: the captions' own images score exactly."""
    p = intensity(images)
    n, h, w = p.shape
    ink = np.where(p >= INK_FLOOR, p, 0.0).reshape(n, h * w)
    ys, xs = np.meshgrid(-np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)  # x to the right, y up: positive shear leans right
    mass = ink.sum(1)
    safe = np.where(mass > 0, mass, 1.0)
    dx = xs[None] - ((ink * xs).sum(1) / safe)[:, None]
    dy = ys[None] - ((ink * ys).sum(1) / safe)[:, None]
    mu11, mu02 = (ink * dx * dy).sum(1), (ink * dy * dy).sum(1)
    slant = np.divide(mu11, mu02, out=np.zeros(n), where=mu02 > 0)  # blank or one-row images stand upright
    return {"thickness": mass, "slant": slant, "width": _width(p.max(1))}


def _width(profile: np.ndarray) -> np.ndarray:
    """Column maxima [N, W] → the distance between the first and last crossings of EDGE, each placed by
    linear interpolation between neighbouring columns; 0 where no column reaches it. Whole pixels tie
    too often for terciles (MNIST's widths are 20 px in 18% of images)."""
    p = np.pad(profile, ((0, 0), (1, 1)))  # paper beyond the border
    above = p > EDGE
    rows = np.arange(len(p))
    first = above.argmax(1)
    last = p.shape[1] - 1 - above[:, ::-1].argmax(1)
    before, after = np.maximum(first - 1, 0), np.minimum(last + 1, p.shape[1] - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = first - 1 + (EDGE - p[rows, before]) / (p[rows, first] - p[rows, before])
        right = last + (p[rows, last] - EDGE) / (p[rows, last] - p[rows, after])
    return np.where(above.any(1), right - left, 0.0)


@dataclass(frozen=True, eq=False)  # arrays inside: no elementwise ==
class Bins:
    """Per-class tercile thresholds of each attribute, fitted on a training split: value < lo → 0,
    lo ≤ value < hi → 1, value ≥ hi → 2. ``train_shares``: each bin's share of the training images."""

    thresholds: dict[str, np.ndarray]                  # attribute → [K, 2] (lo, hi) per class
    train_shares: dict[str, tuple[float, float, float]]

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.thresholds)

    @classmethod
    def fit(cls, values: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int) -> "Bins":
        labels = np.asarray(labels)
        thresholds = {}
        for name, v in values.items():
            thresholds[name] = np.stack([np.quantile(np.asarray(v)[labels == k], [1 / 3, 2 / 3]) for k in range(num_classes)])
        bins = cls(thresholds, {})
        shares = {name: tuple(float(s) for s in _shares(b)) for name, b in bins.assign(values, labels).items()}
        return cls(thresholds, shares)

    def assign(self, values: Mapping[str, np.ndarray], labels: Any) -> dict[str, np.ndarray]:
        """The bin (int64 [N]) of each attribute in both ``values`` and these bins, under the thresholds
        of each image's class in ``labels``."""
        labels = np.asarray(labels, dtype=np.int64)
        out = {}
        for name in self.attributes:
            if name in values:
                lo_hi = self.thresholds[name][labels]  # [N, 2]
                v = np.asarray(values[name], dtype=np.float64)
                out[name] = (v >= lo_hi[:, 0]).astype(np.int64) + (v >= lo_hi[:, 1])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; floats survive JSON exactly (shortest round-tripping repr)."""
        return {"attributes": list(self.attributes),
                "thresholds": {k: v.tolist() for k, v in self.thresholds.items()},
                "train_shares": {k: list(v) for k, v in self.train_shares.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Bins":
        return cls({k: np.asarray(d["thresholds"][k], dtype=np.float64) for k in d["attributes"]},
                   {k: tuple(d["train_shares"][k]) for k in d["attributes"]})


def _shares(bins: np.ndarray) -> np.ndarray:
    return np.bincount(bins, minlength=3) / max(len(bins), 1)


# --- writing and reading captions ---------------------------------------------------------------------

def write_captions(x: Any, labels: np.ndarray, train_rows: np.ndarray, attributes: tuple[str, ...],
                   num_classes: int = 10) -> tuple[list[str], Bins, dict[str, list[float]]]:
    """Captions of images ``x`` (model units, the very array the data set holds) with digits ``labels``:
    (one caption per image, the bins fitted on ``train_rows``, each bin's share of all images). Raises if
    a bin holds less than MIN_SHARE of the images."""
    labels = np.asarray(labels, dtype=np.int64)
    values = {name: v for name, v in measure(x).items() if name in attributes}
    bins = Bins.fit({k: v[train_rows] for k, v in values.items()}, labels[train_rows], num_classes)
    assigned = bins.assign(values, labels)
    shares = {name: [round(float(s), 4) for s in _shares(b)] for name, b in assigned.items()}
    thin = {name: s for name, s in shares.items() if min(s) < MIN_SHARE}
    if thin:
        raise RuntimeError(f"caption bins below {MIN_SHARE:.0%} of the images: {thin}")
    phrasing = np.random.default_rng(PHRASING_SEED).integers(PHRASINGS, size=len(labels))
    texts = [caption(int(labels[i]), {k: int(assigned[k][i]) for k in attributes}, int(phrasing[i])) for i in range(len(labels))]
    return texts, bins, shares


def caption(digit: int, attrs: Mapping[str, int], phrasing: int) -> str:
    """The caption of ``digit`` (0–9) with bins ``attrs`` (any of ATTRIBUTES → 0, 1, 2) in ``phrasing``
    (0 … PHRASINGS − 1); see the module docstring."""
    if not 0 <= digit <= 9 or not 0 <= phrasing < PHRASINGS:
        raise ValueError(f"caption: digit {digit} must be 0–9 and phrasing {phrasing} 0–{PHRASINGS - 1}")
    if set(attrs) - set(ATTRIBUTES) or any(v not in (0, 1, 2) for v in attrs.values()):
        raise ValueError(f"caption: attributes {dict(attrs)} must map {', '.join(ATTRIBUTES)} to 0, 1 or 2")
    t, w, s = (attrs.get(k) for k in ("thickness", "width", "slant"))
    word, numeral = DIGIT_WORDS[digit], str(digit)
    thick = None if t is None else THICKNESS[t]
    stroke = None if t is None else f"{THICKNESS[t]} stroke"
    wide = None if w is None else WIDTH[w]
    if phrasing == 0:
        return _noun_phrase([thick, wide, word]) + _after(" ", LEANING, s)
    if phrasing == 1:
        return f"handwritten {numeral}" + _after(", ", None, _and_list([thick, wide, _pick(SLANTED, s)]))
    if phrasing == 2:
        return f"the digit {word}" + "".join(", " + d for d in (stroke, wide, _pick(SLANTED, s)) if d)
    if phrasing == 3:
        head = _noun_phrase([numeral]) + ("" if t is None else f" with a {stroke}")
        return head + "".join(", " + d for d in (wide, _pick(LEANING, s)) if d)
    if phrasing == 4:
        return _noun_phrase([_pick(LEANING_ADJECTIVE, s), thick, wide, numeral])
    rest = [d for d in (stroke, wide, _pick(LEANING, s)) if d]
    return word.capitalize() + (": " + ", ".join(rest) if rest else "")


def _pick(words: tuple[str, ...], index: int | None) -> str | None:
    return None if index is None else words[index]


def _after(sep: str, words: tuple[str, ...] | None, item: Any) -> str:
    text = _pick(words, item) if words is not None else item
    return sep + text if text else ""


def _noun_phrase(words: list[str | None]) -> str:
    present = [w for w in words if w]
    # "an" before a vowel sound: eight, 8, upright; "one" starts with a w sound.
    article = "an" if present[0][0] in "aeiou8" and not present[0].startswith("one") else "a"
    return " ".join([article, *present])


def _and_list(items: list[str | None]) -> str:
    present = [i for i in items if i]
    return " and ".join([", ".join(present[:-1]), present[-1]]) if len(present) > 1 else "".join(present)


_TOKENS = re.compile(r"[a-z]+|[0-9]+")
_WORDS = {**{w: ("digit", d) for d, w in enumerate(DIGIT_WORDS)}, **{str(d): ("digit", d) for d in range(10)},
          "thin": ("thickness", 0), "medium": ("thickness", 1), "thick": ("thickness", 2),
          "narrow": ("width", 0), "wide": ("width", 2),
          "left": ("slant", 0), "upright": ("slant", 1), "right": ("slant", 2)}


def parse(text: str) -> dict[str, int]:
    """The grammar's elements that ``text`` names (``digit`` 0–9; ``thickness``, ``slant``, ``width`` as
    bins 0–2); absent when not named or named with two different values."""
    tokens = _TOKENS.findall(str(text).lower())
    found: dict[str, set[int]] = {}
    for i, token in enumerate(tokens):
        hit = _WORDS.get(token)
        if token == "medium" and i + 1 < len(tokens) and tokens[i + 1] == "width":
            hit = ("width", 1)
        if hit is not None:
            found.setdefault(hit[0], set()).add(hit[1])
    return {name: values.pop() for name, values in found.items() if len(values) == 1}


__all__ = ["ATTRIBUTES", "PHRASINGS", "Bins", "caption", "measure", "parse", "write_captions", "intensity"]
