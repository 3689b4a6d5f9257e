"""argparse pieces: a parser whose errors are one line with exit code 2, and checked types."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable, NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"fewstep: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # `--seed=--` reaches here as ["--"], which argparse turns into [] and then skips the type check.
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)


def checked(cast: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``cast`` the text, require ``ok`` (and finiteness), else say what was expected."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def bounded_int(lo: int, hi: int) -> Callable[[str], Any]:
    """An integer in [lo, hi]: upper bounds keep a typo (or a fuzzer) from overflowing a seed or asking
    for a time grid larger than memory."""
    return checked(int, lambda v: lo <= v <= hi, f"an integer from {lo} to {hi:,}")


positive_int = bounded_int(1, 10**9)
non_negative_int = bounded_int(0, 10**9)
steps_int = bounded_int(1, 100_000)          # sampling steps
count_int = bounded_int(1, 10_000_000)       # samples
seed_int = bounded_int(0, 2**32 - 1)
threads_int = bounded_int(0, 256)
positive_float = checked(float, lambda v: v > 0, "a positive number")
finite_float = checked(float, lambda v: True, "a finite number")
non_negative_float = checked(float, lambda v: v >= 0, "a number >= 0")
at_least_one_float = checked(float, lambda v: v >= 1, "a number >= 1")
unit_float = checked(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def int_list(text: str) -> list[int]:
    """``1,2,4,8`` → [1, 2, 4, 8], every entry a step count (1 to 100,000)."""
    return [steps_int(part.strip()) for part in text.split(",") if part.strip()] or [steps_int(text)]


def float_list(text: str) -> list[float]:
    """``0,1,1.5`` → [0.0, 1.0, 1.5], every entry a number >= 0 (guidance weights)."""
    return [non_negative_float(part.strip()) for part in text.split(",") if part.strip()] or [non_negative_float(text)]


def float_pair(text: str) -> tuple[float, float]:
    """``LO,HI`` → (lo, hi) with 0 <= lo < hi."""
    parts = float_list(text)
    if len(parts) != 2 or not parts[0] < parts[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO < HI, got {text!r}")
    return parts[0], parts[1]


def str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
