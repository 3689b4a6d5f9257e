"""The ``fewstep`` command: train, sample, evaluate, report, export, demo.

Every user-facing error is one line, ``fewstep: error: <flag or file>: <what was expected>``, exit 2.
"""
from __future__ import annotations

import sys
import warnings

from ..errors import UserError
from . import demo, evaluate_cmd, export_cmd, report_cmd, sample_cmd, train_cmd
from ..train.threads import apply_threads
from .args import Parser, threads_int

# Library errors name the Python argument (``n``, ``ect_q``); the CLI shows its flag. Arguments not listed
# here are spelled --name-with-dashes; a command may add its own (report's positional RUN).
FLAGS = {"n": "-n", "max_bad_steps": "--skip-nonfinite"}


def build_parser() -> Parser:
    parser = Parser(prog="fewstep", description="Few-step sampling for diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (train_cmd, sample_cmd, evaluate_cmd, report_cmd, export_cmd, demo):
        module.add_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--threads", type=threads_int, default=0,
                             help="intra-op CPU threads (0: OMP_NUM_THREADS if set, else the cores idle at the start)")
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"fewstep: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the caller's warning display (tests call main in-process)
        warnings.showwarning = _one_line_warning
        return _run(args)


def _run(args) -> int:  # noqa: ANN001
    try:
        apply_threads(args.threads)
        args.func(args)
    except UserError as exc:
        print(f"fewstep: error: {exc.for_flags({**FLAGS, **getattr(args, 'flags', {})})}", file=sys.stderr)
        return 2
    except MemoryError:
        print("fewstep: error: out of memory; ask for fewer samples, a smaller batch or model, or --data-loader stream", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "alloc" not in str(exc) and "out of memory" not in str(exc):
            raise
        first = str(exc).strip().splitlines()[0][:200]
        print(f"fewstep: error: out of memory ({first}); ask for fewer samples, a smaller batch or model", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fewstep: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
