"""User-facing errors: the CLI prints ``fewstep: error: <message>`` on one line and exits with 2."""


class UserError(Exception):
    """Bad input from a user: a flag, a file or a run. The message names it and what was expected."""
