"""Property-based fuzz of the CLI's inputs (the hardening issue): ``fewstep train --data FILE`` on
generated arrays, damaged files and image folders, and generated flag values for ``train``, ``sample``
and ``evaluate``.

The contract for every case: exit 0, or exit 2 with exactly one line on stderr, ``fewstep: error: ...``,
and nothing on disk changed. No exception may escape ``main`` (the ``cli`` fixture fails the test on
one: a user would see a traceback) and no Python warning a real process would print may be raised
(extra lines on stderr). Inputs that are plainly valid must also be accepted (exit 0), and a single bad
flag must be refused with an error that names it.

The bugs this fuzz found first (0-d arrays, damaged or pickled .npz members, timedelta "images", tiny
images in a UNet, ``--flag=--``, integer overflows, image folders of width 1/3/4, values near 1e300) are
fixed, and their inputs are part of the strategies.

Every generated case is counted; the module prints ``fuzz: N cases (...)`` at its end (pytest -s).
"""
from __future__ import annotations

import collections
import json
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import snapshot

FUZZ = {"deadline": None, "database": None, "print_blob": True,
        "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
TRAIN_FAST = ["--iters", "1", "--batch", "8", "--width", "8", "--eval-samples", "8", "--no-progress", "--device", "cpu"]
# Image data train the UNet preset in a third of the cases (~2 s each on a busy CPU) and an MLP otherwise
# (~0.5 s), so the file stays near a minute; points always use an MLP.
BACKBONE = st.sampled_from([[], ["--model", "mlp"], ["--model", "mlp"]])
CHANNELS = (1, 3, 4)
SAMPLER_NAMES = ("ddim", "addim", "ancestral", "consistency", "ect", "heun")
ADDIM_WORDS = (("table", "data_free"), ("addim", "xhat"))

CASES: collections.Counter[str] = collections.Counter()       # test → generated cases run
OUTCOMES: collections.Counter[tuple[str, int]] = collections.Counter()  # (test, exit code) → cases
CURRENT = [""]  # the test whose case runs now


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary():
    yield
    per_test = ", ".join(f"{name} {n} (exit 0: {OUTCOMES[name, 0]}, exit 2: {OUTCOMES[name, 2]})" for name, n in CASES.items())
    print(f"\nfuzz: {sum(CASES.values())} cases: {per_test}")


def new_case(tmp_path: Path, test: str) -> Path:
    """A fresh folder for one generated case (hypothesis shares ``tmp_path`` between examples)."""
    CASES[test] += 1
    CURRENT[0] = test
    case = tmp_path / f"{test}-{CASES[test]}"
    case.mkdir()
    return case


# Categories Python does not show by default (a user would not see them). ResourceWarning: numpy's
# np.load leaves the file to the garbage collector when an .npz is not a zip file.
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def call(cli, *args) -> tuple[int, str, str, list[str]]:
    """``cli(*args)`` and the warnings it raised that a real process would print (extra stderr lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = cli(*args)
    return code, out, err, [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
                            if not issubclass(w.category, HIDDEN_WARNINGS)]


def check(what: str, result: tuple[int, str, str, list[str]], before: dict, after: dict, expect_ok: bool | None = None) -> int:
    """The contract; ``what`` is the reproducer shown on failure. Returns the exit code."""
    code, _, err, warns = result
    assert code in (0, 2), f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{what}:\n{err}"
    assert not warns, f"{what}: exit {code} with warnings {warns}"
    OUTCOMES[CURRENT[0], code] += 1
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fewstep: error: "), f"{what}: not a one-line error: {err!r}"
        assert after == before, f"{what}: refused ({lines[0]}) but files changed"
    if expect_ok is True:
        assert code == 0, f"{what}: a valid input was refused: {err.strip()}"
    elif expect_ok is False:
        assert code == 2, f"{what}: an invalid input was accepted"
    return code


def junk(max_size: int = 12) -> st.SearchStrategy[str]:
    """Arbitrary text as a command-line value (no NUL: a real argv cannot hold one). Note: the
    value ``--`` (``--seed=--``) reaches the commands as [] and escapes as TypeError & co."""
    return st.text(max_size=max_size).filter(lambda s: "\x00" not in s)


def as_int(text: str) -> int | None:
    """What argparse's ``int`` makes of ``text`` (the CLI's integer flags use ``int``), else None."""
    try:
        return int(text)
    except ValueError:
        return None


# --- 1. generated arrays ----------------------------------------------------------------------

DTYPES = ("bool", "int8", "uint8", "int16", ">i4", "int64", "uint64", "float16", "float32", ">f4", "float64", "longdouble",
          "complex64", "complex128", "object", "str", "datetime64[s]", "timedelta64[s]")
MODES = ("normal", "unit", "pm1", "bytes", "negative", "constant", "huge", "giant", "nan", "inf")
NPZ_KEYS = ("x", "data", "samples", "images", "points", "arr_0", "labels")


def make_array(shape: tuple[int, ...], dtype: str, mode: str, seed: int) -> np.ndarray:
    """A deterministic array: ``mode`` picks the values (``huge`` ±1e30, ``giant`` ±1e300, ``nan``/``inf``
    one bad entry), then they are cast to ``dtype`` (ints wrap, floats overflow: the file holds what it holds)."""
    rng = np.random.default_rng(seed)
    base = np.asarray({
        "normal": lambda: rng.normal(2.0, 3.0, shape), "unit": lambda: rng.random(shape),
        "pm1": lambda: rng.uniform(-1.0, 1.0, shape), "bytes": lambda: rng.integers(0, 256, shape).astype(np.float64),
        "negative": lambda: -1000.0 * rng.random(shape), "constant": lambda: np.full(shape, 7.0),
        "huge": lambda: rng.choice([-1e30, 1e30, 0.5], shape), "giant": lambda: rng.choice([-1e300, 1e300, 1.0], shape),
        "nan": lambda: rng.random(shape), "inf": lambda: rng.random(shape),
    }[mode](), dtype=np.float64)
    if mode in ("nan", "inf") and base.size:
        base.flat[rng.integers(base.size)] = np.nan if mode == "nan" else -np.inf
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "object":
            arr = np.empty(shape, dtype=object)
            for i in range(arr.size):
                arr.flat[i] = (1, "a", None, 2.5)[i % 4]
            return arr
        if dtype == "str":
            return base.astype(str)
        if dtype == "bool":
            return base > 0.5
        return base.astype(dtype)


def image_hw(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(H, W) when ``shape`` reads as images under the documented layout rule, else None."""
    if len(shape) == 3:
        return shape[1], shape[2]
    if len(shape) == 4:
        first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
        if first != last:
            return (shape[2], shape[3]) if first else (shape[1], shape[2])
    return None


def expect_accepted(arr: np.ndarray) -> bool | None:
    """True when the array is plainly valid data (docs: points [N, D]; images [N, H, W], [N, C, H, W],
    [N, H, W, C], uint8 or in [0, 1], [-1, 1], [0, 255]; every value finite and within float32's range);
    None: no claim."""
    if arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3, 4) or arr.size == 0 or len(arr) < 2:
        return None
    x = arr.astype(np.float64)
    if not np.isfinite(x).all() or np.abs(x).max() > np.finfo(np.float32).max:
        return None
    if arr.ndim == 2:
        return True
    if image_hw(arr.shape) is None:
        return None
    if arr.dtype == np.uint8:
        return True
    lo, hi = x.min(), x.max()
    return True if any(lo >= a and hi <= b for a, b in ((0, 1), (-1, 1), (0, 255))) else None


@st.composite
def array_cases(draw) -> tuple[tuple[int, ...], str, str, int, str]:
    # Ranks 2-4 are the ones that can be data.
    rank = draw(st.sampled_from([0, 1, 2, 2, 2, 2, 3, 3, 4, 5]))
    shape = () if rank == 0 else (draw(st.sampled_from([0, 1, 2, 3, 5, 8, 12])),
                                  *draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 7]), min_size=rank - 1, max_size=rank - 1)))
    numeric = ["uint8", "uint8", "float32", "float32", "float64", "float64", "int64", "bool"]
    dtype = draw(st.sampled_from(numeric + list(DTYPES)))
    mode = draw(st.sampled_from(["unit", "unit", "pm1", "bytes", *MODES]))
    suffix = draw(st.sampled_from([".npy", ".npz"]))
    key = draw(st.sampled_from(NPZ_KEYS))
    return shape, dtype, mode, draw(st.integers(0, 2**32 - 1)), suffix + (f":{key}" if suffix == ".npz" else "")


@settings(max_examples=45, **FUZZ)
@given(case=array_cases(), backbone=BACKBONE)
def test_train_on_generated_arrays(cli, tmp_path: Path, case, backbone: list[str]) -> None:
    shape, dtype, mode, seed, where = case
    work = new_case(tmp_path, "arrays")
    arr = make_array(shape, dtype, mode, seed)
    path = work / ("d.npz" if where.startswith(".npz") else "d.npy")
    if path.suffix == ".npz":
        np.savez(path, **{where.split(":")[1]: arr})
    else:
        np.save(path, arr, allow_pickle=True)
    what = f"train --data {path.name} {' '.join(backbone)} with make_array({shape}, {dtype!r}, {mode!r}, {seed}) saved as {where}"
    before = snapshot(work)
    code = check(what, call(cli, "train", "--data", path, "--out", work / "run", *TRAIN_FAST, *backbone), before, snapshot(work),
                 expect_accepted(arr))
    if code == 0:
        assert (work / "run" / "checkpoint.json").is_file(), what
        assert snapshot(work)["d" + path.suffix] == before["d" + path.suffix], f"{what}: the data file changed"
    shutil.rmtree(work)


# --- 2. damaged and odd files -----------------------------------------------------------------

def valid_file_bytes(kind: str, tmp: Path) -> tuple[bytes, str]:
    """The bytes and suffix of a valid data file: points .npy, uint8 images .npy, points .npz."""
    rng = np.random.default_rng(0)
    arr = {"points": rng.normal(size=(20, 2)), "images": rng.integers(0, 256, (10, 6, 6), dtype=np.uint8),
           "npz": rng.normal(size=(20, 2))}[kind]
    path = tmp / ("valid.npz" if kind == "npz" else "valid.npy")
    (np.savez if kind == "npz" else np.save)(path, arr)
    data = path.read_bytes()
    path.unlink()
    return data, path.suffix


@st.composite
def damaged_files(draw) -> tuple[str, dict]:
    kind = draw(st.sampled_from(["truncated", "flipped", "random", "npy_magic", "empty", "multi_npz", "zip_member", "suffix",
                                 "not_there", "folder_without_images"]))
    spec: dict = {"source": draw(st.sampled_from(["points", "points", "points", "images", "npz"]))}  # images train slowest
    if kind in ("truncated", "flipped"):
        spec["at"] = draw(st.floats(0.0, 1.0, exclude_max=True))
        spec["xor"] = draw(st.integers(1, 255))
    if kind in ("random", "npy_magic"):
        spec["bytes"] = draw(st.binary(max_size=200))
        spec["suffix"] = draw(st.sampled_from([".npy", ".npz"]))
    if kind == "multi_npz":
        spec["arrays"] = draw(st.dictionaries(st.sampled_from(NPZ_KEYS + ("a", "b")),
                                              st.sampled_from(["points", "images", "empty", "row", "nan"]), max_size=4))
    if kind == "zip_member":
        spec["member"] = draw(st.sampled_from(["x.npy", "readme.txt", "x"]))
        spec["bytes"] = draw(st.binary(max_size=50))
    if kind == "suffix":
        spec["name"] = draw(st.sampled_from(["d.csv", "d", "d.NPY", "d.npy.txt", "d.Npz", "a b.npy", "dätä.npy", "d.npz"]))
    return kind, spec


def write_damaged(kind: str, spec: dict, work: Path) -> Path:
    rng = np.random.default_rng(1)
    if kind in ("truncated", "flipped", "suffix"):
        data, suffix = valid_file_bytes(spec["source"], work)
        path = work / (spec["name"] if kind == "suffix" else "d" + suffix)
        i = int(spec.get("at", 0) * len(data))
        if kind == "truncated":
            data = data[:i]
        elif kind == "flipped":
            data = data[:i] + bytes([data[i] ^ spec["xor"]]) + data[i + 1 :]
        path.write_bytes(data)
    elif kind in ("random", "npy_magic"):
        path = work / ("d" + spec["suffix"])
        path.write_bytes((b"\x93NUMPY\x01\x00" if kind == "npy_magic" else b"") + spec["bytes"])
    elif kind == "empty":
        path = work / "d.npy"
        path.write_bytes(b"")
    elif kind == "multi_npz":
        path = work / "d.npz"
        pool = {"points": rng.normal(size=(20, 2)), "images": rng.integers(0, 256, (10, 6, 6), dtype=np.uint8),
                "empty": np.zeros((0, 2)), "row": np.arange(5.0), "nan": np.full((4, 2), np.nan)}
        np.savez(path, **{name: pool[what] for name, what in spec["arrays"].items()})
    elif kind == "zip_member":
        path = work / "d.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(spec["member"], spec["bytes"])
    elif kind == "not_there":
        path = work / "missing.npy"
    else:  # folder_without_images
        path = work / "folder"
        path.mkdir()
        (path / "notes.txt").write_text("no images here")
    return path


@settings(max_examples=45, **FUZZ)
@given(case=damaged_files(), backbone=BACKBONE)
def test_train_on_damaged_files(cli, tmp_path: Path, case, backbone: list[str]) -> None:
    kind, spec = case
    work = new_case(tmp_path, "files")
    path = write_damaged(kind, spec, work)
    what = f"train --data {path.name} {' '.join(backbone)}: {kind} {spec}"
    before = snapshot(work)
    code = check(what, call(cli, "train", "--data", path, "--out", work / "run", *TRAIN_FAST, *backbone), before, snapshot(work))
    if code == 0:
        assert (work / "run" / "checkpoint.json").is_file(), what
    shutil.rmtree(work)


# --- 3. image folders -------------------------------------------------------------------------

PNG_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "I;16")
JPEG_MODES = ("L", "RGB", "CMYK")


def make_image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    return rgba.convert("RGB").convert(mode) if mode in ("P", "CMYK") else rgba.convert(mode)


@st.composite
def image_folders(draw) -> tuple[list[tuple[str, str, tuple[int, int]]], str | None]:
    """Images as (format, mode, (w, h)), all one size or each its own; and perhaps one bad entry."""
    n = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 4, 5]))
    same = draw(st.sampled_from([True, True, True, False]))
    widths, heights = st.integers(1, 8), st.integers(1, 8)
    size = (draw(widths), draw(heights))
    images = []
    for _ in range(n):
        fmt = draw(st.sampled_from(["png", "jpg", "PNG", "jpeg"]))
        mode = draw(st.sampled_from(PNG_MODES if fmt.lower() == "png" else JPEG_MODES))
        images.append((fmt, mode, size if same else (draw(st.integers(1, 8)), draw(heights))))
    extra = draw(st.sampled_from([None] * 5 + ["random_bytes", "truncated", "folder_named_png", "notes.txt"]))
    return images, extra


@settings(max_examples=15, **FUZZ)
@given(case=image_folders(), backbone=BACKBONE)
def test_train_on_image_folders(cli, tmp_path: Path, case, backbone: list[str]) -> None:
    images, extra = case
    work = new_case(tmp_path, "folders")
    folder = work / "images"
    folder.mkdir()
    for i, (fmt, mode, size) in enumerate(images):
        make_image(mode, size, i).save(folder / f"{i:02d}.{fmt}", format="PNG" if fmt.lower() == "png" else "JPEG")
    if extra == "random_bytes":
        (folder / "zz.png").write_bytes(bytes(range(40)))
    elif extra == "truncated":
        make_image("RGB", (16, 16), 99).save(folder / "zz.png")
        (folder / "zz.png").write_bytes((folder / "zz.png").read_bytes()[:60])
    elif extra == "folder_named_png":
        (folder / "zz.png").mkdir()
    elif extra == "notes.txt":
        (folder / "notes.txt").write_text("not an image")
    well_formed = len(images) >= 2 and extra in (None, "notes.txt") and len({s for _, _, s in images}) == 1
    what = f"train --data a folder of {images} + {extra} {' '.join(backbone)}"
    before = snapshot(work)
    code = check(what, call(cli, "train", "--data", folder, "--out", work / "run", *TRAIN_FAST, *backbone), before, snapshot(work),
                 True if well_formed else None)
    if code == 0:
        assert (work / "run" / "checkpoint.json").is_file(), what
    shutil.rmtree(work)


# --- 4. flag values of sample, evaluate and train ---------------------------------------------
# Each case gives some flags valid values and (usually) one flag a bad one. Validity follows the
# documented ranges (integers as ``int`` reads them), so: no bad flag → exit 0; one bad flag → a
# one-line error that names it; more → some one-line error.

def int_ok(lo: int, hi: int) -> Callable[[str], bool]:
    return lambda s: as_int(s) is not None and lo <= as_int(s) <= hi


def int_bad(lo: int, hi: int, *, huge: bool = False) -> st.SearchStrategy[str]:
    """Text for an integer flag that is mostly not in [lo, hi]: below it, spelled oddly, junk; ``huge``:
    past 2**64. Text that ``int`` reads as more than ``hi`` is left out (a long run, not an error)."""
    values = st.one_of(
        st.integers(lo - 5, lo - 1).map(str),
        st.sampled_from(["1.5", "1e3", "two", "", " ", "0x10", "+2", " 2 ", "1_0", "٣", "-", "--"]),
        junk(6),
        st.integers(2**64, 2**80).map(str) if huge else st.nothing(),
    )
    return values.filter(lambda s: as_int(s) is None or as_int(s) <= hi or (huge and as_int(s) >= 2**64))


def int_flag(lo: int, hi: int, *, huge: bool = False) -> tuple:
    return st.integers(lo, hi).map(str), int_bad(lo, hi, huge=huge), int_ok(lo, hi)


def as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def float_flag(lo: float, hi: float, ok: Callable[[float], bool], *, bad_max: float = float("inf")) -> tuple:
    """(valid text, bad text, check); bad text that ``float`` reads as more than ``bad_max`` is left out."""
    bad = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1", "1e", "", "0.5.5", "1,5", "1_0"]), junk(6))
    bad = bad.filter(lambda s: as_float(s) is None or not as_float(s) > bad_max)
    return st.floats(lo, hi).map(repr), bad, lambda s: as_float(s) is not None and ok(as_float(s))


def sampler_ok(text: str) -> bool:
    """Whether ``text`` is a sampler spec: a name, and for addim up to two of its ':' options."""
    name, *opts = text.split(":")
    if name not in SAMPLER_NAMES:
        return False
    return len(opts) <= 2 and all(o in ADDIM_WORDS[i] for i, o in enumerate(opts)) if name == "addim" else not opts


def sampler_good() -> st.SearchStrategy[str]:
    addim = st.integers(0, 2).flatmap(lambda k: st.tuples(*[st.sampled_from(ADDIM_WORDS[i]) for i in range(k)]))
    return st.one_of(st.sampled_from(SAMPLER_NAMES), addim.map(lambda words: ":".join(["addim", *words])))


def sampler_bad() -> st.SearchStrategy[str]:
    """Known names with wrong ':' options, or junk (never containing ',' or ':' inside junk options)."""
    option = st.one_of(st.sampled_from(["table", "data_free", "xhat", "addim", "", "u_mid=1"]), junk(4).filter(lambda s: ":" not in s))
    with_options = st.tuples(st.sampled_from(SAMPLER_NAMES), st.lists(option, min_size=1, max_size=3)).map(
        lambda t: ":".join([t[0], *t[1]]))
    return st.one_of(with_options, junk(10)).filter(lambda s: "," not in s)


@st.composite
def flag_case(draw, flags: dict[str, tuple], required: tuple[str, ...] = ()) -> dict[str, str]:
    """Values for some of ``flags`` (name → (good, bad, check)): all good, or one of them bad."""
    present = [f for f in flags if f in required or draw(st.booleans())]
    bad = draw(st.sampled_from([None] * max(1, len(present) // 2) + present)) if present else None  # ~1/3 all good
    return {f: draw(flags[f][1] if f == bad else flags[f][0]) for f in present}


def check_flags(what: str, result: tuple, invalid: list[str], before: dict, after: dict) -> int:
    """The contract, plus: no invalid flag → exit 0; one → an error naming it."""
    code = check(what, result, before, after, expect_ok=not invalid)
    if len(invalid) == 1:
        assert invalid[0] in result[2], f"{what}: the error does not name {invalid[0]}: {result[2].strip()}"
    return code


SAMPLE_FLAGS = {
    "--steps": int_flag(1, 8, huge=True),
    "-n": int_flag(1, 64),
    "--seed": int_flag(0, 2**32 - 1, huge=True),
    "--batch-size": (st.integers(16, 10**9).map(str), int_bad(1, 64), int_ok(1, 10**9)),  # >= 16: at most 4 batches
    "--variance": (st.sampled_from(["table", "data_free"]), junk(8), lambda s: s in ("table", "data_free")),
    "--sampler": (sampler_good(), sampler_bad(), sampler_ok),
}


def run_on_moons(cli, moons_run: Path, work: Path, command: list[str], argv: list[str], invalid: list[str]) -> tuple[int, str]:
    """``fewstep COMMAND --run moons_run … ARGV`` (``command``'s output file inside ``work``), checked against
    the contract and for an untouched run folder; returns (exit code, the reproducer)."""
    name, out_flag, out_file = command
    run_before, before = snapshot(moons_run), snapshot(work)
    what = f"{name} --run RUN {out_flag} {out_file} {' '.join(map(repr, argv))}"
    code = check_flags(what, call(cli, name, "--run", moons_run, out_flag, work / out_file, *argv), invalid, before, snapshot(work))
    assert snapshot(moons_run) == run_before, f"{what}: the run folder changed"
    return code, what


@settings(max_examples=50, **FUZZ)
@given(values=flag_case(SAMPLE_FLAGS, required=("-n",)), png=st.integers(0, 3))  # -n: its default 1000 is slow
def test_sample_flag_values(cli, moons_run: Path, tmp_path: Path, values: dict[str, str], png: int) -> None:
    work = new_case(tmp_path, "sample")
    argv = [f"{flag}={value}" for flag, value in values.items()] + ([f"--png={work / 's.png'}"] if png == 0 else [])
    invalid = [flag for flag, value in values.items() if not SAMPLE_FLAGS[flag][2](value)]
    steps = as_int(values["--steps"]) if "--steps" in values else 64  # a teacher's default
    if values.get("--sampler", "").split(":")[0] == "ect" and not invalid and steps > 2:
        invalid = ["--steps"]  # ECT samples in 1 or 2 steps
    code, what = run_on_moons(cli, moons_run, work, ["sample", "--out", "s.npz"], argv, invalid)
    if code == 0:
        samples = np.load(work / "s.npz")["samples"]
        assert samples.shape == (as_int(values["-n"]), 2) and np.isfinite(samples).all(), what
        assert (work / "s.png").is_file() == (png == 0), what
    shutil.rmtree(work)


def step_list_ok(text: str) -> bool:
    """``--steps 1,2,4`` as the CLI reads it: non-empty comma parts (or the whole text), each in [1, 3]."""
    parts = [p.strip() for p in text.split(",") if p.strip()] or [text]
    return all(int_ok(1, 3)(p) for p in parts)


def step_list_bad() -> st.SearchStrategy[str]:
    """Comma lists with a bad entry, or junk; lists with an entry ``int`` reads as > 3 are left out."""
    entries = st.lists(st.one_of(st.integers(1, 3).map(str), int_bad(1, 3, huge=True)), min_size=1, max_size=3)
    return st.one_of(entries.map(",".join), st.sampled_from(["", ",", " , ", "1,,x"]), junk(6)).filter(
        lambda s: all(as_int(p) is None or as_int(p) <= 3 or as_int(p) >= 2**64 for p in [*s.split(","), s]))


EVALUATE_FLAGS = {
    # always given: their defaults evaluate for minutes
    "--steps": (st.lists(st.integers(1, 3).map(str), min_size=1, max_size=3).flatmap(
        lambda parts: st.sampled_from([",".join(parts), " , ".join(parts) + ","])), step_list_bad(), step_list_ok),
    "-n": int_flag(1, 24),
    "--seeds": int_flag(1, 2),
    "--sampler": (st.lists(sampler_good(), min_size=1, max_size=2).map(",".join),
                  st.lists(st.one_of(sampler_good(), sampler_bad()), min_size=1, max_size=2).map(",".join),
                  lambda s: all(sampler_ok(p.strip()) for p in s.split(",") if p.strip())),
}


@settings(max_examples=15, **FUZZ)
@given(values=flag_case(EVALUATE_FLAGS, required=("--steps", "-n", "--seeds")))
def test_evaluate_flag_values(cli, moons_run: Path, tmp_path: Path, values: dict[str, str]) -> None:
    work = new_case(tmp_path, "evaluate")
    argv = [f"{flag}={value}" for flag, value in values.items()]
    invalid = [flag for flag, value in values.items() if not EVALUATE_FLAGS[flag][2](value)]
    samplers = [p.strip().split(":")[0] for p in values.get("--sampler", "").split(",")]
    steps = [as_int(p) or 0 for p in values["--steps"].split(",") if p.strip()]
    if "ect" in samplers and not invalid and max(steps) > 2:
        invalid = ["--steps"]  # ECT samples in 1 or 2 steps
    code, what = run_on_moons(cli, moons_run, work, ["evaluate", "--json", "e.json"], argv, invalid)
    if code == 0:
        assert json.loads((work / "e.json").read_text())["rows"], what
    shutil.rmtree(work)


TRAIN_FLAGS = {
    "--iters": int_flag(1, 3),
    "--batch": int_flag(1, 64),
    "--width": int_flag(1, 16),
    "--eval-samples": int_flag(1, 16),
    "--seed": int_flag(0, 2**32 - 1, huge=True),
    # A learning rate that makes training diverge stops the run after it started (tests/test_hardening.py),
    # which is not a refusal of the input; the fuzz keeps to rates that train.
    "--lr": float_flag(1e-5, 0.1, lambda v: 0 < v < float("inf"), bad_max=0.1),
    "--dropout": float_flag(0.0, 0.99, lambda v: 0 <= v < 1),
    "--model": (st.just("mlp"), st.sampled_from(["unet", "MLP", "", "mlp "]), lambda s: s == "mlp"),
}
TRAIN_DEFAULTS = {"--iters": "1", "--batch": "8", "--width": "8", "--eval-samples": "8"}


@settings(max_examples=15, **FUZZ)
@given(values=flag_case(TRAIN_FLAGS))
def test_train_flag_values(cli, tmp_path: Path, values: dict[str, str]) -> None:
    work = new_case(tmp_path, "train")
    argv = [f"{flag}={value}" for flag, value in {**TRAIN_DEFAULTS, **values}.items()]
    invalid = [flag for flag, value in values.items() if not TRAIN_FLAGS[flag][2](value)]
    what = f"train --data moons --out run --no-progress --device cpu {' '.join(map(repr, argv))}"
    before = snapshot(work)
    code = check_flags(what, call(cli, "train", "--data", "moons", "--out", work / "run", "--no-progress", "--device", "cpu", *argv),
                       invalid, before, snapshot(work))
    if code == 0:
        assert (work / "run" / "checkpoint.json").is_file(), what
    shutil.rmtree(work)
