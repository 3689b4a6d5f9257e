"""Hardening figures on this machine: training speed idle and beside busy processes for several thread
settings, DDP throughput with 1 and 2 processes, and streamed against in-memory image folders (speed and
peak memory as the folder grows to 50,000 images).

    python benchmarks/hardening.py threads [--iters 400]        → benchmarks/results/threads.json
    python benchmarks/hardening.py ddp [--iters 300]            → benchmarks/results/ddp.json
    python benchmarks/hardening.py stream [--sizes 5000,20000,50000] → benchmarks/results/stream.json

Every measurement is a fresh ``fewstep train`` process; speed is the median of the log's it/s records
after the first (warm-up) one. Run each study alone on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
FEWSTEP = [sys.executable, "-m", "fewstep.cli.main"]
DIGITS = ["--data", "digits", "--no-progress", "--log-every", "25", "--eval-samples", "64", "--ckpt-every", "100000"]


def it_per_s(run: Path) -> float:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["it_per_s"] for r in records if "it_per_s" in r]
    return statistics.median(rates[1:] or rates)


def launch(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    return subprocess.Popen(FEWSTEP + args, env={**base, **env}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])


def train_speed(tmp: Path, name: str, env: dict[str, str], iters: int, beside: str | None) -> list[float]:
    """it/s of one digits-teacher run (two when ``beside`` is "twin"), beside nothing, ``yes`` or a twin run."""
    time.sleep(3)  # let the previous measurement's processes go, or the next run sees them as load
    others: list[subprocess.Popen] = []
    if beside == "busy":
        others.append(subprocess.Popen(["yes"], stdout=subprocess.DEVNULL))
    runs = [tmp / f"{name}-{i}" for i in range(2 if beside == "twin" else 1)]
    try:
        procs = [launch(["train", "--out", str(r), "--iters", str(iters), *DIGITS], env, tmp) for r in runs]
        for p in procs:
            finish(p)
    finally:  # never leave the busy process behind
        for o in others:
            o.kill()
            o.wait()
    return [round(it_per_s(r), 1) for r in runs]


SETTINGS = {  # the environment each row runs `fewstep train` with
    "2 threads, default wait policy (before fewstep chose)": {"OMP_NUM_THREADS": "2"},
    "2 threads, OMP_WAIT_POLICY=ACTIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "2 threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "no environment (fewstep's own choice)": {},
}


def threads(args: argparse.Namespace) -> dict:
    out: dict = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "iters": args.iters, "rows": []}
    chosen = {k: v for k, v in SETTINGS.items() if not args.only or args.only in k}
    with tempfile.TemporaryDirectory() as tmp:
        for label, env in chosen.items():
            env = {**env, **({} if "OMP_NUM_THREADS" in env else {"OMP_NUM_THREADS": ""})}
            env = {k: v for k, v in env.items() if v}
            row = {"setting": label, "env": env}
            for beside in (None, "busy", "twin"):
                row[beside or "idle"] = train_speed(Path(tmp), f"{len(out['rows'])}-{beside}", env, args.iters, beside)
                print(label, beside or "idle", row[beside or "idle"], flush=True)
            out["rows"].append(row)
    return out


def ddp(args: argparse.Namespace) -> dict:
    out: dict = {"iters": args.iters, "batch_per_process": 128, "rows": []}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    with tempfile.TemporaryDirectory() as tmp:
        for procs in (1, 2):
            run = Path(tmp) / f"ddp{procs}"
            cmd = torchrun + [f"--nproc_per_node={procs}", "-m", "fewstep.cli.main", "train", "--out", str(run),
                              "--iters", str(args.iters), *DIGITS]
            tick = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // procs))})
            speed = it_per_s(run)
            row = {"processes": procs, "threads_per_process": max(1, (os.cpu_count() or 2) // procs), "it_per_s": round(speed, 1),
                   "examples_per_s": round(speed * 128 * procs), "wall_s": round(time.perf_counter() - tick, 1)}
            print(row, flush=True)
            out["rows"].append(row)
    return out


def make_folder(folder: Path, n: int, side: int = 28) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    base = rng.integers(0, 256, (64, side, side), dtype=np.uint8)
    for i in range(n):  # cheap distinct images: a base pattern rolled by i
        Image.fromarray(np.roll(base[i % 64], i // 64, axis=1)).save(folder / f"{i:06d}.png")


def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """Peak resident memory of ``cmd`` (and its DataLoader workers, summed at their peaks), in MB."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
               "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def stream(args: argparse.Namespace) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    data_root = ROOT / "runs" / "image_folders"  # generated once, reused (ignored by git)
    out: dict = {"iters": args.iters, "batch": 128, "image": "28x28 grayscale PNG", "rows": []}
    for n in sizes:
        folder = data_root / f"images{n}"
        if not folder.is_dir():
            tick = time.perf_counter()
            make_folder(folder, n)
            print(f"made {n} images in {time.perf_counter() - tick:.0f} s", flush=True)
        for loader, workers in (("memory", 0), ("stream", 2)):
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / "run"
                cmd = FEWSTEP + ["train", "--data", str(folder), "--data-loader", loader, "--workers", str(workers),
                                 "--model", "mlp", "--width", "256", "--out", str(run), "--iters", str(args.iters),
                                 "--batch", "128", "--eval-samples", "64", "--no-progress", "--log-every", "25"]
                tick = time.perf_counter()
                rss = peak_rss_mb(cmd, Path(tmp))
                row = {"images": n, "loader": loader, "workers": workers, "it_per_s": round(it_per_s(run), 1),
                       "peak_rss_mb_of_the_largest_process": round(rss), "wall_s": round(time.perf_counter() - tick, 1)}
            print(row, flush=True)
            out["rows"].append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="study", required=True)
    for name, iters in (("threads", 400), ("ddp", 300), ("stream", 200)):
        p = sub.add_parser(name)
        p.add_argument("--iters", type=int, default=iters)
        if name == "stream":
            p.add_argument("--sizes", default="5000,20000,50000")
        if name == "threads":
            p.add_argument("--only", help="run only the settings whose label contains this text")
    args = parser.parse_args()
    result = {"threads": threads, "ddp": ddp, "stream": stream}[args.study](args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.study}.json"
    if getattr(args, "only", None) and path.exists():  # a partial run replaces its own rows only
        rows = {r["setting"]: r for r in json.loads(path.read_text())["rows"]}
        rows.update({r["setting"]: r for r in result["rows"]})
        result["rows"] = [rows[label] for label in SETTINGS if label in rows]
    path.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(), **result}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
