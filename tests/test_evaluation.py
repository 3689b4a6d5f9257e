"""The training-free baselines of ``fewstep.evaluation`` without sampling: the plan per NFE budget, the
best of them within a budget, the excess ratio against hand-made rows, and what is (not) evaluated again."""
from __future__ import annotations

import math
import types
from typing import Any

import pytest

from fewstep import evaluation
from fewstep.evaluation import (
    MANY_NFE, TRAINING_FREE, against_training_free, best_training_free, format_table, mark_training_free,
    missing_training_free, training_free_plan,
)
from fewstep.samplers import parse_sampler


def row(sampler: str, nfe: int, mean: float, *, steps: int | None = None, free: bool = True, n: int = 10,
        seeds: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    out = {"sampler": sampler, "steps": steps or nfe, "nfe": nfe, "metric": "swd", "mean": mean, "std": 0.01,
           "values": [mean, mean], "floor": 0.001, "n_samples": n, "seeds": list(seeds)}
    return {**out, "training_free": True} if free else out


# --- the plan -------------------------------------------------------------------------------------

@pytest.mark.parametrize("budgets", [[1], [2], [3], [4, 8], [1, 2, 3, 4, 5, 16], [7, 256]])
def test_plan_takes_the_most_steps_within_each_budget(budgets: list[int]) -> None:
    plan = training_free_plan(budgets)
    assert len(plan) == len(set(plan))
    for spec, steps in plan:
        nfe = parse_sampler(spec).entry.nfe
        assert any(nfe(steps) <= b < nfe(steps + 1) for b in budgets), (spec, steps)  # fits one, one more step would not
    for spec in TRAINING_FREE:
        nfe = parse_sampler(spec).entry.nfe
        for b in budgets:
            best = max(s for s in range(1, b + 1) if nfe(s) <= b)
            assert (spec, best) in plan or (spec in ("dpmpp2m", "unipc") and best <= 2), (spec, b)


def test_plan_heun_gets_2n_minus_1_calls_and_the_solvers_skip_two_steps() -> None:
    plan = training_free_plan([1, 2, 3, 4, 8, 9])
    assert [s for spec, s in plan if spec == "heun"] == [1, 2, 4, 5]  # 1, 3, 7, 9 calls; budgets 2, 4 add nothing new
    assert [s for spec, s in plan if spec == "ddim"] == [1, 2, 3, 4, 8, 9]
    for solver in ("dpmpp2m", "unipc"):
        assert [s for spec, s in plan if spec == solver] == [3, 4, 8, 9]  # at 1 and 2 steps they are DDIM
    assert not [p for p in training_free_plan([1, 2]) if p[0] in ("dpmpp2m", "unipc")]
    assert training_free_plan([4], ["unipc", "heun"]) == [("unipc", 4), ("heun", 2)]


# --- the best of them and the excess ratio --------------------------------------------------------

BASELINES = [
    row("ddim", 4, 0.9), row("addim", 4, 0.7), row("unipc", 4, math.inf),  # a diverged sampler never wins
    row("heun", 7, 0.2, steps=4),                      # over a 4-call budget
    row("ddim", 256, 0.1), row("heun", 255, 0.12, steps=128),
    row("consistency", 2, 0.01, free=False),           # not training-free: never a baseline
]


def test_best_training_free_within_a_budget() -> None:
    assert best_training_free(BASELINES, 4)["sampler"] == "addim"
    assert best_training_free(BASELINES, 7)["sampler"] == "heun"
    assert best_training_free(BASELINES, MANY_NFE)["mean"] == 0.1
    assert best_training_free(BASELINES, 2) is None


def test_excess_ratio_closed_form() -> None:
    students = [row("consistency", 4, 0.3, free=False), row("consistency", 4, 0.05, free=False),
                row("consistency", 8, 0.2, free=False), row("consistency", 2, 0.5, free=False)]
    out = against_training_free(students, BASELINES)
    # (row − teacher best) / (best at ≤ NFE − teacher best): teacher best = ddim at 256 calls, 0.1
    assert out[0]["best_free"]["sampler"] == "addim" and out[0]["teacher_best"]["nfe"] == 256
    assert out[0]["excess_ratio"] == pytest.approx((0.3 - 0.1) / (0.7 - 0.1)) == pytest.approx(1 / 3)
    assert out[1]["excess_ratio"] == pytest.approx((0.05 - 0.1) / 0.6) and out[1]["excess_ratio"] < 0  # beats the teacher
    assert out[2]["best_free"]["sampler"] == "heun" and out[2]["excess_ratio"] == pytest.approx((0.2 - 0.1) / (0.2 - 0.1))
    assert "best_free" not in out[3] and "excess_ratio" not in out[3] and out[3]["teacher_best"]["mean"] == 0.1
    assert [r["mean"] for r in out] == [r["mean"] for r in students]  # the rows themselves unchanged
    assert "best_free" not in students[0]  # and not modified in place


def test_no_excess_ratio_when_the_budget_already_reaches_the_teacher_best() -> None:
    out = against_training_free([row("consistency", 256, 0.3, free=False)], BASELINES)
    assert out[0]["best_free"]["mean"] == out[0]["teacher_best"]["mean"] == 0.1 and "excess_ratio" not in out[0]


def test_format_table_shows_the_best_training_free_column() -> None:
    rows = against_training_free([row("consistency", 4, 0.3, free=False), row("consistency", 2, 0.5, free=False)], BASELINES)
    table = format_table(rows, title="student")
    assert "best training-free at ≤ NFE" in table and "excess ratio" in table
    lines = table.splitlines()
    assert "| addim (4 steps): 0.7000 ± 0.0100 | 0.33 |" in lines[3]
    assert lines[4].endswith("| – | – |")
    assert "best training-free" not in format_table(BASELINES)


# --- what is evaluated -----------------------------------------------------------------------------

def test_mark_training_free_marks_only_default_specs() -> None:
    rows = [row(s, 4, 1.0, free=False) for s in ("ddim", "addim", "addim:data_free", "heun:t", "unipc", "consistency")]
    assert [r.get("training_free", False) for r in mark_training_free(rows)] == [True, True, False, False, True, False]
    assert not any("training_free" in r for r in rows)


def test_missing_training_free_evaluates_only_what_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int]] = []

    def fake_evaluate_run(run, dataset, samplers, steps, *, n, seeds, extra=None, guidance=(None,)):
        ((spec,), (s,)) = samplers, steps
        calls.append((spec, s, n))
        return [row(spec, parse_sampler(spec).entry.nfe(s), 1.0, steps=s, free=False, n=n, seeds=tuple(seeds))]

    monkeypatch.setattr(evaluation, "evaluate_run", fake_evaluate_run)
    have = [row("ddim", 4, 0.5), row("addim", 4, 0.5), row("ddim", 256, 0.5),
            row("heun", 3, 0.5, steps=2, free=False),   # not marked: not a baseline, evaluated again
            row("unipc", 4, 0.5, n=99)]                  # another sample count: not comparable, evaluated again
    unconditional = types.SimpleNamespace(num_classes=None, nulls=dict)  # no condition: nothing to guide
    added = missing_training_free(unconditional, object(), [4], have, n=10, seeds=(0, 1), samplers=("ddim", "addim", "unipc", "heun"))
    expected = [p for p in training_free_plan([4, MANY_NFE], ("ddim", "addim", "unipc", "heun"))
                if p not in {("ddim", 4), ("addim", 4), ("ddim", 256)}]
    assert [(spec, s) for spec, s, _ in calls] == expected
    assert ("heun", 2) in expected and ("unipc", 4) in expected
    assert all(r["training_free"] for r in added) and len(added) == len(expected)
