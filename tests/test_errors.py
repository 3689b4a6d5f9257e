"""Bad input: every user-facing error is one line on stderr, ``fewstep: error: ...``, naming the flag or
file, with exit code 2 and no traceback; and a refused command leaves existing files as they were.

Most cases call ``fewstep.cli.main.main`` in this process (an exception escaping it would be a
traceback); a few run the real ``python -m fewstep.cli.main`` in a subprocess to check the process
end to end (exit status, stderr, no warnings).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_MOONS, run_fewstep, snapshot


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("fewstep: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.fixture
def run_copy(moons_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared trained run, free to damage."""
    return Path(shutil.copytree(moons_run, tmp_path / "run"))


def weights_file(run: Path) -> Path:
    (weights,) = run.glob("weights-*.safetensors")
    return weights


# --- --data -----------------------------------------------------------------------------------

def _write_bad_data(d: Path) -> dict[str, tuple[Path, str]]:
    """name → (path, a word the message must contain)."""
    np.save(d / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 3.0]]))
    np.save(d / "inf.npy", np.array([[1.0, np.inf], [0.0, 1.0], [2.0, 3.0]]))
    np.save(d / "nan_images.npy", np.where(np.eye(8)[None] > 0, np.nan, 0.5).repeat(4, 0))
    np.save(d / "rank1.npy", np.arange(10.0))
    np.save(d / "rank5.npy", np.zeros((2, 2, 2, 2, 2)))
    np.save(d / "empty.npy", np.zeros((0, 2)))
    np.save(d / "one_row.npy", np.zeros((1, 2)))
    np.save(d / "ambiguous.npy", np.zeros((4, 3, 8, 3), np.uint8))
    np.save(d / "float_range.npy", np.linspace(0, 300, 4 * 64).reshape(4, 8, 8))
    np.save(d / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    (d / "garbage.npy").write_bytes(b"this is not a numpy file")
    (d / "zero_bytes.npy").write_bytes(b"")
    np.save(d / "truncated.npy", np.zeros((100, 2)))
    (d / "truncated.npy").write_bytes((d / "truncated.npy").read_bytes()[:300])
    np.savez(d / "two_arrays.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    (d / "points.csv").write_text("1,2\n3,4\n")
    (d / "mixed").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "mixed" / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(d / "mixed" / "b.png")
    (d / "no_images").mkdir()
    (d / "no_images" / "readme.txt").write_text("x")
    (d / "broken_image").mkdir()
    (d / "broken_image" / "a.png").write_bytes(b"not a png")
    return {
        "nan": (d / "nan.npy", "NaN"), "inf": (d / "inf.npy", "inf"), "nan_images": (d / "nan_images.npy", "NaN"),
        "rank1": (d / "rank1.npy", "rank 1"), "rank5": (d / "rank5.npy", "rank 5"),
        "empty": (d / "empty.npy", "empty"), "one_row": (d / "one_row.npy", "fewer than 2"),
        "ambiguous": (d / "ambiguous.npy", "ambiguous"), "float_range": (d / "float_range.npy", "[0, 1]"),
        "strings": (d / "strings.npy", "dtype"), "garbage": (d / "garbage.npy", "cannot read"),
        "zero_bytes": (d / "zero_bytes.npy", "cannot read"), "truncated": (d / "truncated.npy", "cannot read"),
        "two_arrays": (d / "two_arrays.npz", "'a', 'b'"), "csv": (d / "points.csv", ".npy"),
        "mixed_sizes": (d / "mixed", "a.png"), "no_images": (d / "no_images", "no .png"),
        "broken_image": (d / "broken_image", "a.png"),
    }


BAD_DATA = ["nan", "inf", "nan_images", "rank1", "rank5", "empty", "one_row", "ambiguous", "float_range", "strings",
            "garbage", "zero_bytes", "truncated", "two_arrays", "csv", "mixed_sizes", "no_images", "broken_image"]


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_file(cli, tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path, word = _write_bad_data(data)[case]
    before = snapshot(tmp_path)
    code, out, err = cli("train", "--data", path, "--out", tmp_path / "run", "--iters", "1", "--no-progress")
    assert_one_line_error(code, err, "--data", path.name, word)
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_mixed_sizes_names_both_files(cli, tmp_path: Path) -> None:
    path, _ = _write_bad_data(tmp_path)["mixed_sizes"]
    code, _, err = cli("train", "--data", path, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "--data", "a.png", "8x8", "b.png", "8x9")


def test_unknown_dataset(cli, tmp_path: Path) -> None:
    code, _, err = cli("train", "--data", "moonz", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "--data", "'moonz'", "moons", "digits")
    assert not (tmp_path / "run").exists()


def test_data_required(cli, tmp_path: Path) -> None:
    code, _, err = cli("train", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "--data")


# --- step counts and other ranges ------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, flag",
    [
        (["sample", "--steps", "0"], "--steps"),
        (["sample", "--steps", "-3"], "--steps"),
        (["sample", "--steps", "two"], "--steps"),
        (["sample", "-n", "0"], "-n"),
        (["evaluate", "--steps", "0,1"], "--steps"),
        (["evaluate", "--steps", "1,-2"], "--steps"),
        (["evaluate", "--steps", "1,x"], "--steps"),
        (["evaluate", "--seeds", "0"], "--seeds"),
        (["train", "--iters", "0"], "--iters"),
        (["train", "--batch", "-1"], "--batch"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--dropout", "1.0"], "--dropout"),
    ],
)
def test_out_of_range_flags(cli, moons_run: Path, tmp_path: Path, argv: list[str], flag: str) -> None:
    command, rest = argv[0], argv[1:]
    where = {"sample": ["--run", moons_run, "--out", tmp_path / "s.npz"], "evaluate": ["--run", moons_run, "--json", tmp_path / "e.json"],
             "train": ["--data", "moons", "--out", tmp_path / "run"]}[command]
    before, run_before = snapshot(tmp_path), snapshot(moons_run)
    code, _, err = cli(command, *where, *rest)
    assert_one_line_error(code, err, flag)
    assert snapshot(tmp_path) == before and snapshot(moons_run) == run_before


@pytest.mark.parametrize("steps", [0, -1])
def test_python_api_refuses_non_positive_steps(moons_run: Path, steps: int) -> None:
    import fewstep
    from fewstep.errors import UserError

    with pytest.raises(UserError, match="steps"):
        fewstep.load(moons_run).sample(4, steps=steps)


# --- runs and checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sample", "evaluate", "resume"])
def test_missing_checkpoint(cli, tmp_path: Path, command: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path)
    argv = {"sample": ["sample", "--run", empty, "--out", tmp_path / "s.npz"], "evaluate": ["evaluate", "--run", empty, "--steps", "1"],
            "resume": ["train", "--out", empty, "--resume", "--no-progress"]}[command]
    code, _, err = cli(*argv)
    assert_one_line_error(code, err, "--resume" if command == "resume" else "--run", str(empty))
    assert snapshot(tmp_path) == before


def test_run_folder_that_does_not_exist(cli, tmp_path: Path) -> None:
    code, _, err = cli("sample", "--run", tmp_path / "nope", "--out", tmp_path / "s.npz")
    assert_one_line_error(code, err, "--run", "nope")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["sample", "evaluate", "resume"])
def test_truncated_weights(cli, run_copy: Path, tmp_path: Path, command: str) -> None:
    weights = weights_file(run_copy)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = snapshot(tmp_path)
    argv = {"sample": ["sample", "--run", run_copy, "--out", tmp_path / "s.npz"], "evaluate": ["evaluate", "--run", run_copy, "--steps", "1"],
            "resume": ["train", "--out", run_copy, "--resume", "--iters", "40", "--no-progress"]}[command]
    code, _, err = cli(*argv)
    assert_one_line_error(code, err, "--resume" if command == "resume" else "--run", weights.name, "truncated")
    assert snapshot(tmp_path) == before


def test_weights_file_deleted(cli, run_copy: Path, tmp_path: Path) -> None:
    weights_file(run_copy).unlink()
    code, _, err = cli("sample", "--run", run_copy, "--out", tmp_path / "s.npz")
    assert_one_line_error(code, err, "--run", "missing")
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("command", ["sample", "evaluate", "resume"])
def test_other_format_version(cli, run_copy: Path, tmp_path: Path, command: str) -> None:
    meta = json.loads((run_copy / "checkpoint.json").read_text())
    meta["format_version"] = 999
    (run_copy / "checkpoint.json").write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    argv = {"sample": ["sample", "--run", run_copy, "--out", tmp_path / "s.npz"], "evaluate": ["evaluate", "--run", run_copy, "--steps", "1"],
            "resume": ["train", "--out", run_copy, "--resume", "--no-progress"]}[command]
    code, _, err = cli(*argv)
    assert_one_line_error(code, err, "--resume" if command == "resume" else "--run", "format version 999")
    assert snapshot(tmp_path) == before


def test_config_with_unknown_field_names_the_run(cli, run_copy: Path, tmp_path: Path) -> None:
    config = json.loads((run_copy / "config.json").read_text())
    config["from_the_future"] = 1
    (run_copy / "config.json").write_text(json.dumps(config))
    code, _, err = cli("sample", "--run", run_copy, "--out", tmp_path / "s.npz")
    assert_one_line_error(code, err, "--run", "from_the_future")


def test_newer_format_version_is_reported_as_such(cli, run_copy: Path, tmp_path: Path) -> None:
    """A run written by a later fewstep: a new format version and config fields this one does not know."""
    meta = json.loads((run_copy / "checkpoint.json").read_text())
    meta["format_version"] = 2
    (run_copy / "checkpoint.json").write_text(json.dumps(meta))
    config = json.loads((run_copy / "config.json").read_text())
    config["from_the_future"] = 1
    (run_copy / "config.json").write_text(json.dumps(config))
    code, _, err = cli("sample", "--run", run_copy, "--out", tmp_path / "s.npz")
    assert_one_line_error(code, err, "--run", "format version 2")


def test_corrupt_checkpoint_json(cli, run_copy: Path, tmp_path: Path) -> None:
    (run_copy / "checkpoint.json").write_text("{ not json")
    code, _, err = cli("sample", "--run", run_copy, "--out", tmp_path / "s.npz")
    assert_one_line_error(code, err, "--run", str(run_copy))


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_resume_with_damaged_config_json(cli, run_copy: Path, damage: str) -> None:
    if damage == "missing":
        (run_copy / "config.json").unlink()
    else:
        (run_copy / "config.json").write_text("{ not json")
    before = snapshot(run_copy)
    code, _, err = cli("train", "--out", run_copy, "--resume", "--no-progress")
    assert_one_line_error(code, err, "--resume")
    assert snapshot(run_copy) == before


# --- outputs that exist ----------------------------------------------------------------------

def test_sample_refuses_existing_npz_unless_overwrite(cli, moons_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "existing.npz"
    out.write_bytes(b"precious")
    before = snapshot(tmp_path)
    code, _, err = cli("sample", "--run", moons_run, "--out", out, "-n", "8", "--steps", "2")
    assert_one_line_error(code, err, "--out", "existing.npz", "--overwrite")
    assert snapshot(tmp_path) == before

    code, _, err = cli("sample", "--run", moons_run, "--out", out, "-n", "8", "--steps", "2", "--overwrite")
    assert code == 0, err
    assert np.load(out)["samples"].shape == (8, 2)


def test_sample_refuses_existing_png(cli, moons_run: Path, tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    png.write_bytes(b"precious")
    before = snapshot(tmp_path)
    code, _, err = cli("sample", "--run", moons_run, "--out", tmp_path / "new.npz", "--png", png, "-n", "8", "--steps", "2")
    assert_one_line_error(code, err, "--png", "plot.png")
    assert snapshot(tmp_path) == before  # not even the .npz was written


def test_sample_out_must_be_npz(cli, moons_run: Path, tmp_path: Path) -> None:
    code, _, err = cli("sample", "--run", moons_run, "--out", tmp_path / "samples.txt")
    assert_one_line_error(code, err, "--out", ".npz")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_refuses_existing_json(cli, moons_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    out.write_text("{}")
    before = snapshot(tmp_path)
    code, _, err = cli("evaluate", "--run", moons_run, "--steps", "1", "-n", "10", "--seeds", "1", "--json", out)
    assert_one_line_error(code, err, "--json", "e.json")
    assert snapshot(tmp_path) == before


def test_train_refuses_non_empty_out(cli, run_copy: Path, tmp_path: Path) -> None:
    (run_copy / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", run_copy, *TINY_MOONS)
    assert_one_line_error(code, err, "--out", str(run_copy), "--overwrite", "--resume")
    assert snapshot(tmp_path) == before


def test_train_refuses_non_run_non_empty_out(cli, tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "a.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", out, *TINY_MOONS)
    assert_one_line_error(code, err, "--out")
    assert snapshot(tmp_path) == before


def test_train_out_is_a_file(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.write_text("a file")
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", out, *TINY_MOONS)
    assert_one_line_error(code, err, "--out", "file")
    assert snapshot(tmp_path) == before


def test_train_overwrite_replaces_the_run_and_keeps_other_files(cli, run_copy: Path) -> None:
    (run_copy / "notes.txt").write_text("mine")
    old_weights = weights_file(run_copy).name
    code, _, err = cli("train", "--out", run_copy, "--overwrite", "--data", "moons", "--iters", "3", "--batch", "16",
                       "--width", "8", "--eval-samples", "10", "--no-progress")
    assert code == 0, err
    assert (run_copy / "notes.txt").read_text() == "mine"
    assert weights_file(run_copy).name == "weights-00000003.safetensors" != old_weights
    assert json.loads((run_copy / "checkpoint.json").read_text())["step"] == 3


def test_overwrite_with_a_bad_flag_leaves_the_run_untouched(cli, run_copy: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", run_copy, "--overwrite", "--data", "moons", "--model", "unet", "--iters", "2",
                       "--no-progress")
    assert_one_line_error(code, err, "--model", "unet")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["empty", "missing", "other_files"])
def test_resume_without_a_run(cli, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind != "missing":
        out.mkdir()
    if kind == "other_files":
        (out / "a.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", out, "--resume", "--no-progress")
    assert_one_line_error(code, err, "--resume", str(out))
    assert snapshot(tmp_path) == before


def test_resume_and_overwrite_together(cli, run_copy: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", run_copy, "--resume", "--overwrite", "--no-progress")
    assert_one_line_error(code, err, "--resume", "--overwrite")
    assert snapshot(tmp_path) == before


def test_unknown_sampler(cli, moons_run: Path, tmp_path: Path) -> None:
    code, _, err = cli("evaluate", "--run", moons_run, "--sampler", "eulerx", "--steps", "1", "--json", tmp_path / "e.json")
    assert_one_line_error(code, err, "--sampler", "eulerx")
    assert not (tmp_path / "e.json").exists()
    code, _, err = cli("sample", "--run", moons_run, "--sampler", "eulerx", "--out", tmp_path / "s.npz")
    assert_one_line_error(code, err, "--sampler")


def test_clip_x_on_points(cli, moons_run: Path, tmp_path: Path) -> None:
    code, _, err = cli("sample", "--run", moons_run, "--out", tmp_path / "s.npz", "--clip-x")
    assert_one_line_error(code, err, "--clip-x")
    assert not (tmp_path / "s.npz").exists()


def test_unknown_command_and_flag(cli) -> None:
    code, _, err = cli("trian")
    assert_one_line_error(code, err, "trian")
    code, _, err = cli("train", "--itres", "3", "--out", "x")
    assert_one_line_error(code, err, "--itres")


# --- the real process ------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["unknown_data", "truncated", "steps_zero"])
def test_error_in_a_real_process(run_copy: Path, tmp_path: Path, case: str) -> None:
    """``python -m fewstep.cli.main``: exit status 2, exactly one line on stderr, nothing on stdout."""
    weights = weights_file(run_copy)
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    argv = {"unknown_data": (["train", "--data", "nosuch", "--out", tmp_path / "new"], "--data"),
            "truncated": (["sample", "--run", run_copy, "--out", tmp_path / "s.npz"], weights.name),
            "steps_zero": (["sample", "--run", run_copy, "--out", tmp_path / "s.npz", "--steps", "0"], "--steps")}
    args, needle = argv[case]
    before = snapshot(tmp_path)
    proc = run_fewstep(*args, cwd=tmp_path, exe=[sys.executable, "-m", "fewstep.cli.main"])
    assert_one_line_error(proc.returncode, proc.stderr, needle)
    assert proc.stdout == ""
    assert snapshot(tmp_path) == before


# --- refusals leave no trace -----------------------------------------------------------------

@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_refused_command_creates_no_folders(cli, tmp_path: Path, command: str) -> None:
    argv = {"sample": ["sample", "--run", tmp_path / "no_run", "--out", tmp_path / "new" / "sub" / "s.npz"],
            "evaluate": ["evaluate", "--run", tmp_path / "no_run", "--json", tmp_path / "new" / "e.json"]}[command]
    code, _, err = cli(*argv)
    assert_one_line_error(code, err, "--run")
    assert list(tmp_path.iterdir()) == [], [p.name for p in tmp_path.iterdir()]


def test_sample_png_of_one_dimensional_points(cli, tmp_path: Path) -> None:
    np.save(tmp_path / "line.npy", np.random.default_rng(0).normal(size=(200, 1)))
    code, _, err = cli("train", "--data", tmp_path / "line.npy", "--out", tmp_path / "run", "--iters", "3", "--batch", "16",
                       "--width", "8", "--eval-samples", "20", "--no-progress")
    assert code == 0, err
    code, _, err = cli("sample", "--run", tmp_path / "run", "--out", tmp_path / "s.npz", "-n", "20", "--steps", "2",
                       "--png", tmp_path / "s.png")
    if code == 0:  # a plot of 1-D points is fine ...
        with Image.open(tmp_path / "s.png") as im:
            assert im.format == "PNG"
    else:          # ... and so is a one-line refusal that writes nothing
        assert_one_line_error(code, err, "--png")
        assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.png").exists()
