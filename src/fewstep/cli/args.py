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


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = checked(float, lambda v: v > 0, "a positive number")
finite_float = checked(float, lambda v: True, "a finite number")
non_negative_float = checked(float, lambda v: v >= 0, "a number >= 0")
at_least_one_float = checked(float, lambda v: v >= 1, "a number >= 1")
unit_float = checked(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def int_list(text: str) -> list[int]:
    """``1,2,4,8`` → [1, 2, 4, 8], every entry a positive integer."""
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()] or [positive_int(text)]


def str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
