"""The errors deepsky raises on purpose.

Every error a user can cause (a bad file, a bad setting, a session that cannot be processed)
is a :class:`DeepskyError`. The command line turns one into a single line on stderr and exit
code 2; anything else is a bug and keeps its traceback.

Messages name the file, the parameter and the value, so the line alone tells what to fix.
"""

from __future__ import annotations

from os import PathLike


class DeepskyError(Exception):
    """Base of every error deepsky raises for a user's input or setting."""


class InputError(DeepskyError):
    """A file or folder given as input cannot be used (missing, corrupt, wrong kind)."""

    def __init__(self, path: str | PathLike | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class ConfigError(DeepskyError):
    """A setting has an unknown key or a value outside what it allows."""


class CalibrationError(DeepskyError):
    """Calibration frames are missing, inconsistent or do not fit the lights."""


class RegistrationError(DeepskyError):
    """No usable reference or no frame could be registered."""


class StackingError(DeepskyError):
    """Integration cannot run (no frames left, sizes disagree)."""


class ProcessingError(DeepskyError):
    """Post-processing cannot run on the given image."""


class OutputError(DeepskyError):
    """An output cannot be written (read-only folder, disk full, output inside the input)."""
