"""The layering: the math core (schedules, denoiser, samplers, objectives) imports neither the composition
package (fewstep.runs), nor the training loop, nor the CLI — function-level imports included — and names
no CLI flag; importing it loads none of them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fewstep"
CORE = [SRC / "schedules", SRC / "param.py", SRC / "cond.py", SRC / "guidance.py", SRC / "samplers", SRC / "objectives"]
FORBIDDEN = ("fewstep.runs", "fewstep.train", "fewstep.cli")


def core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        files += sorted(entry.rglob("*.py")) if entry.is_dir() else [entry]
    return files


def absolute(module: Path, node: ast.ImportFrom) -> str:
    """The absolute name an ``ImportFrom`` refers to, relative levels resolved against ``module``."""
    if node.level == 0:
        return node.module or ""
    package = list(module.relative_to(SRC.parent).with_suffix("").parts)[:-1]
    if module.name == "__init__.py":
        package = list(module.parent.relative_to(SRC.parent).parts)
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def violations(path: Path, text: str | None = None) -> list[str]:
    """Forbidden imports and flag-like string literals in ``path`` (or in ``text`` as if it were there)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(path, node)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN):
                found.append(f"{path.name}:{node.lineno} imports {name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--"):
            found.append(f"{path.name}:{node.lineno} names the CLI flag {node.value!r}")
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and str(node.values[0].value).startswith("--"):
            found.append(f"{path.name}:{node.lineno} names a CLI flag in an f-string")
    return found


def test_math_core_imports_no_composition_train_or_cli_and_names_no_flag() -> None:
    files = core_files()
    assert len(files) >= 15, files  # the walk really covers the core
    bad = [v for f in files for v in violations(f)]
    assert bad == []


@pytest.mark.parametrize("snippet, expected", [
    ("from ..runs import load", "imports fewstep.runs"),
    ("def f():\n    from ..train.loop import fit\n", "imports fewstep.train.loop"),
    ("import fewstep.cli.main", "imports fewstep.cli.main"),
    ("from .. import runs", "imports fewstep.runs"),
    ("raise ValueError('--steps: bad')", "names the CLI flag"),
    ("x = f'--teacher: {1}'", "names a CLI flag"),
])
def test_the_walk_catches_each_kind_of_violation(snippet: str, expected: str) -> None:
    as_if = SRC / "samplers" / "_probe.py"   # relative imports resolve as from fewstep.samplers; never written
    assert any(expected in v for v in violations(as_if, snippet)), violations(as_if, snippet)


def test_importing_samplers_and_objectives_loads_no_composition_train_or_cli() -> None:
    code = ("import sys, fewstep.samplers, fewstep.objectives\n"
            f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))\n"
            "print(bad)\n")
    # A fresh interpreter, so that nothing imported by other tests counts; the package's __init__ loads
    # fewstep.runs only when fewstep.load & co. are first used.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
