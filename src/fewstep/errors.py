"""User-facing errors: the CLI prints ``fewstep: error: <message>`` on one line and exits with 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from a user: an argument, a file or a run. The message names it and what was expected.

    ``arg`` is the name of the offending argument as the Python API spells it (``teacher``, ``steps``);
    the message then reads ``teacher: …`` from Python and the CLI shows its own flag (``--teacher: …``).
    """

    def __init__(self, message: str, arg: str | None = None) -> None:
        self.arg = arg
        self.detail = message
        super().__init__(f"{arg}: {message}" if arg else message)

    @staticmethod
    def reason(exc: BaseException) -> str:
        """What went wrong, for a message that wraps ``exc``: a UserError's own words, else type and text."""
        return exc.detail if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"

    def for_flags(self, flags: dict[str, str]) -> str:
        """The message with ``arg`` spelled as the CLI flag ``flags`` maps it to (else ``--arg-name``)."""
        if self.arg is None:
            return str(self)
        return f"{flags.get(self.arg, '--' + self.arg.replace('_', '-'))}: {self.detail}"
