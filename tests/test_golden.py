"""The golden runs (tests/golden/make_golden.py) reproduce: bit for bit on the machine kind they were
recorded on (same torch, CPU kernel level and vector flags, one thread), to 1e-5 relative elsewhere."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"
RTOL = 1e-5


def _module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_golden_runs_reproduce(tmp_path: Path) -> None:
    golden = _module()
    meta = json.loads((GOLDEN / "meta.json").read_text())
    expected = dict(np.load(GOLDEN / "golden.npz"))
    got = golden.build(tmp_path)
    assert sorted(got) == sorted(expected)
    exact = golden.machine() == meta["machine"]
    worst, where = 0.0, ""
    for key, want in expected.items():
        have = got[key]
        assert have.shape == want.shape and have.dtype == want.dtype, key
        if exact:
            assert golden.digest(have) == meta["sha256"][key], f"{key} differs from the golden run (bit-exact machine)"
            continue
        scale = max(float(np.abs(want).max()), 1e-12)
        err = float(np.abs(have.astype(np.float64) - want).max()) / scale
        if err > worst:
            worst, where = err, key
    assert worst <= RTOL, f"{where}: max relative difference {worst:.2e} > {RTOL:g}"


def test_golden_file_matches_its_digests() -> None:
    """The committed arrays are the ones whose checksums meta.json records."""
    golden = _module()
    meta = json.loads((GOLDEN / "meta.json").read_text())
    arrays = dict(np.load(GOLDEN / "golden.npz"))
    assert {k: golden.digest(v) for k, v in arrays.items()} == meta["sha256"]
