"""A small mutation tester: would the test suite notice a wrong sign, a wrong constant, a wrong comparison?

For each listed module, every mutation point inside a function body (not docstrings, not decorators) is
enumerated — ``+``↔``-``, ``*``↔``/``, ``**``→``*``, ``<``↔``<=``, ``>``↔``>=``, ``==``↔``!=``, ``and``↔``or``,
``-x``→``x``, ``not x``→``x``, a number ``c``→``c + 1``, ``True``↔``False`` — and each mutant is written into a copy
of the repository, where the module's own fast tests run against it (``-x``; a timeout counts as killed).
A mutant that passes them all survives and is listed with its line.

    python benchmarks/mutation.py [--only samplers/ddim.py] [--max-per-file 40] [--seed 1] [--json benchmarks/results/mutation.json]

mutmut was the first choice; its whole-suite stats phase and per-function test selection make every
mutant of the samplers re-run the CLI tests (minutes each on 2 cores), so this keeps the same operators
with explicit, fast test selections per module.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fewstep"

# module (under src/fewstep) -> the tests that should notice a change in it
TARGETS = {
    "samplers/ddim.py": ["tests/test_samplers.py", "tests/test_diffusers_parity.py"],
    "samplers/addim.py": ["tests/test_samplers.py"],
    "samplers/consistency.py": ["tests/test_samplers.py"],
    "samplers/ect.py": ["tests/test_ect.py"],
    "samplers/heun.py": ["tests/test_samplers.py"],
    "samplers/ancestral.py": ["tests/test_samplers.py"],
    "samplers/spec.py": ["tests/test_runs.py", "tests/test_samplers.py"],
    "schedules/base.py": ["tests/test_schedules.py", "tests/test_ect.py"],
    "schedules/cosine.py": ["tests/test_schedules.py"],
    # The golden runs (tests/test_golden.py, bit for bit) pin what training does end to end.
    "param.py": ["tests/test_samplers.py", "tests/test_schedules.py", "tests/test_golden.py"],
    "objectives/common.py": ["tests/test_multistep.py", "tests/test_golden.py"],
    "objectives/diffusion.py": ["tests/test_multistep.py", "tests/test_golden.py"],
    "objectives/multistep.py": ["tests/test_multistep.py"],
    "objectives/ect.py": ["tests/test_ect.py", "tests/test_golden.py"],
    "train/ema.py": ["tests/test_hardening.py"],
    "train/loop.py": ["tests/test_hardening.py", "tests/test_golden.py"],
    "train/checkpoint.py": ["tests/test_runs.py"],
    "metrics/swd.py": ["tests/test_metrics.py"],
    "metrics/fid.py": ["tests/test_metrics.py"],
    "runs/teachers.py": ["tests/test_runs.py"],
    "runs/card.py": ["tests/test_runs.py"],
}
PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--no-header"]

SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
        ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.And: ast.Or, ast.Or: ast.And}


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def points(tree: ast.Module) -> list[tuple[int, str]]:
    """(index in ast.walk order of a node inside a function body, what the mutation does)."""
    skip = docstrings(tree)
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in fn.body:
                inside.update(id(n) for n in ast.walk(stmt))
    found = []
    for i, node in enumerate(ast.walk(tree)):
        if id(node) not in inside or id(node) in skip:
            continue
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAP:
            found.append((i, f"{type(node.op).__name__} -> {SWAP[type(node.op)].__name__}"))
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in SWAP:
            found.append((i, f"{type(node.ops[0]).__name__} -> {SWAP[type(node.ops[0])].__name__}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            found.append((i, f"drop {type(node.op).__name__}"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            found.append((i, f"{node.value!r} -> {node.value + 1!r}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            found.append((i, f"{node.value} -> {not node.value}"))
    return found


def mutate(tree: ast.Module, index: int) -> tuple[str, int]:
    tree = copy.deepcopy(tree)
    node = list(ast.walk(tree))[index]
    if isinstance(node, (ast.BinOp, ast.BoolOp)):
        node.op = SWAP[type(node.op)]()
    elif isinstance(node, ast.Compare):
        node.ops[0] = SWAP[type(node.ops[0])]()
    elif isinstance(node, ast.UnaryOp):
        node.op = ast.UAdd()  # −x → +x, not x → +x (the same truth value as x)
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    return ast.unparse(tree), getattr(node, "lineno", 0)


def skip_bulk(folder: str, names: list[str]) -> set[str]:
    """What the copy leaves out: the venv, git, caches, and run folders (but not the fewstep.runs package)."""
    top = Path(folder) == ROOT
    bulky = {".venv", ".git", "__pycache__", "demo_out", "demo_out_quick", "mutants"} | ({"runs"} if top else set())
    return {n for n in names if n in bulky or n.endswith(".egg-info") or (Path(folder).name == "benchmarks" and n == "runs")}


def run_tests(repo: Path, tests: list[str], timeout: float) -> str:
    env = {"PYTHONPATH": str(repo / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(Path.home())}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", *PYTEST, *tests], cwd=repo, env=env, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if proc.returncode == 0 else "killed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="one module, e.g. samplers/ddim.py")
    parser.add_argument("--max-per-file", type=int, default=0, help="sample at most this many mutants per module (0: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.json")
    parser.add_argument("--seed", type=int, default=0,
                        help="which sample --max-per-file draws (0: the one every earlier run drew, seeded by the module name)")
    args = parser.parse_args()
    targets = {k: v for k, v in TARGETS.items() if not args.only or k == args.only}
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(ROOT, repo, ignore=skip_bulk)
        for module, tests in targets.items():
            path = repo / "src" / "fewstep" / module
            original = path.read_text()
            tree = ast.parse(original)
            tick = time.perf_counter()
            baseline = run_tests(repo, tests, timeout=900)
            base_s = time.perf_counter() - tick
            if baseline != "survived":
                print(f"{module}: its tests fail without a mutation; skipped", flush=True)
                continue
            found = points(tree)
            chosen = found if not args.max_per_file or len(found) <= args.max_per_file else sorted(
                random.Random(module if not args.seed else f"{module}#{args.seed}").sample(found, args.max_per_file))
            survivors, counts = [], {"killed": 0, "timeout": 0, "survived": 0}
            for index, what in chosen:
                source, line = mutate(tree, index)
                path.write_text(source)
                outcome = run_tests(repo, tests, timeout=max(60.0, 3 * base_s))
                counts[outcome] += 1
                if outcome == "survived":
                    survivors.append({"line": line, "mutation": what, "code": original.splitlines()[line - 1].strip() if line else ""})
            path.write_text(original)
            results[module] = {"points": len(found), "tried": len(chosen), **counts, "survivors": survivors}
            print(f"{module}: {len(chosen)}/{len(found)} mutants, {counts}", flush=True)
            args.json.parent.mkdir(exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    total = {k: sum(r[k] for r in results.values()) for k in ("tried", "killed", "timeout", "survived")}
    print(f"total: {total}")


if __name__ == "__main__":
    main()
