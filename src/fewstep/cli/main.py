"""The ``fewstep`` command: train, sample, evaluate, report, demo.

Every user-facing error is one line, ``fewstep: error: <flag or file>: <what was expected>``, exit 2.
"""
from __future__ import annotations

import sys

from ..errors import UserError
from . import demo, evaluate_cmd, report_cmd, sample_cmd, train_cmd
from .args import Parser

# Library errors name the Python argument (``n``, ``ect_q``); the CLI shows its flag. Arguments not listed
# here are spelled --name-with-dashes; a command may add its own (report's positional RUN).
FLAGS = {"n": "-n", "max_bad_steps": "--skip-nonfinite"}


def build_parser() -> Parser:
    parser = Parser(prog="fewstep", description="Few-step sampling for diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (train_cmd, sample_cmd, evaluate_cmd, report_cmd, demo):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"fewstep: error: {exc.for_flags({**FLAGS, **getattr(args, 'flags', {})})}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fewstep: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
