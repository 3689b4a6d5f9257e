"""Golden runs that pin fewstep's behaviour across refactors: tiny teachers (moons, digits) and CD, CT,
ECT and multistep-ECT students, trained a few hundred steps with fixed seeds on one thread; their final
weights (online and EMA), the aDDIM variance table and samples from every sampler.

They are driven only through the stable surfaces (the ``fewstep`` CLI and ``fewstep.load``), so the
same script runs on the code before and after a refactor.

    python tests/golden/make_golden.py            # (re)write tests/golden/golden.npz and meta.json

``tests/test_golden.py`` re-runs :func:`build` and compares: bit for bit where the torch version and the
CPU kernels (``torch.backends.cpu.get_cpu_capability()`` and the flags below) match, else to 1e-5 relative.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
N_SAMPLES = 64

# (name, CLI arguments after `fewstep`; {runs} is the folder of all golden runs)
RUNS = [
    ("moons", "train --data moons --iters 300 --width 64 --batch 256 --eval-samples 200 --ckpt-every 1000"),
    ("digits", "train --data digits --cond none --iters 120 --width 64 --batch 64 --eval-samples 64 --ckpt-every 1000"),
    ("moons-cd", "distill --objective cd --teacher {runs}/moons --student-steps 2 --iters 80 --n0 8 --n1 64 --eval-samples 200"),
    ("moons-ct", "train --objective ct --teacher {runs}/moons --student-steps 2 --iters 80 --n0 64 --n1 1280 --eval-samples 200"),
    ("moons-ect", "train --objective ect --teacher {runs}/moons --iters 80 --ect-stages 4 --eval-samples 200"),
    ("moons-mect", "train --objective mect --teacher {runs}/moons --student-steps 2 --iters 80 --ect-stages 4 --eval-samples 200"),
    ("digits-cd", "distill --objective cd --teacher {runs}/digits --student-steps 2 --iters 40 --n0 8 --n1 64 --eval-samples 64"),
]
# (run, sampler spec as `fewstep evaluate --sampler` takes it, steps); None: the run's own sampler
SAMPLES = [
    ("moons", "ddim", 4), ("moons", "addim", 4), ("moons", "addim:data_free:xhat", 3), ("moons", "heun", 3),
    ("moons", "ancestral", 3), ("digits", "ddim", 3), ("digits", "addim", 2),
    ("moons-cd", None, None), ("moons-ct", None, None), ("moons-ect", "ect", 1), ("moons-ect", "ect", 2),
    ("moons-mect", None, None), ("digits-cd", None, None),
]


def machine() -> dict:
    """What decides bit-exactness: torch, its CPU kernel level and the CPU's vector flags, threads."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": sorted(f for f in FLAGS if f in flags), "threads": torch.get_num_threads(),
        "machine": platform.machine(), "python": platform.python_version(),
    }


# Specs whose default changed on purpose after the golden run, and how the golden behaviour is spelled
# now: Heun moved to EDM's grid (docs/math.md §11), the golden samples are on the uniform one; a run's
# plain ``addim`` now takes its options by step count (math.md §4), the golden one is the table at its η.
CURRENT_SPELLING = {"heun": "heun:t", "addim": "addim:table:addim"}


def _sample_kw(spec: str | None, steps: int | None) -> dict:
    if spec is None:
        return {}
    name, variance, final = (spec.split(":") + ["", ""])[:3]
    kw: dict = {"sampler": CURRENT_SPELLING.get(spec, name), "steps": steps}
    if variance:
        kw["variance"] = variance
    if final:
        kw["final"] = final
    return kw


def build(workdir: Path) -> dict[str, np.ndarray]:
    """Train every golden run under ``workdir`` and return the arrays to compare."""
    import fewstep
    from fewstep.cli.main import main
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # so that the CLI keeps the one thread instead of choosing
    arrays: dict[str, np.ndarray] = {}
    for name, args in RUNS:
        out = workdir / name
        argv = args.format(runs=workdir).split() + ["--out", str(out), "--device", "cpu", "--no-progress"]
        if main(argv) != 0:
            raise RuntimeError(f"golden run {name} failed: fewstep {' '.join(argv)}")
        meta = json.loads((out / "checkpoint.json").read_text())
        for key, value in load_file(str(out / meta["weights"])).items():
            if key.startswith(("model.", "ema.")):
                arrays[f"{name}/{key}"] = value.numpy()
        table = meta["extra"].get("variance_table")
        if table is not None:
            arrays[f"{name}/variance_table"] = np.asarray(table["values"], dtype=np.float32)
    for name, spec, steps in SAMPLES:
        run = fewstep.load(workdir / name, device="cpu")
        x = run.sample_tensor(N_SAMPLES, seed=0, **_sample_kw(spec, steps))
        arrays[f"{name}/samples/{spec or 'own'}-{steps or 'own'}"] = x.numpy()
    return arrays


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        arrays = build(Path(tmp))
    np.savez_compressed(HERE / "golden.npz", **arrays)
    meta = {"machine": machine(), "sha256": {k: digest(v) for k, v in sorted(arrays.items())}}
    (HERE / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = (HERE / "golden.npz").stat().st_size
    print(f"{len(arrays)} arrays, {size / 1e6:.2f} MB, {meta['machine']}", file=sys.stderr)


if __name__ == "__main__":
    main()
