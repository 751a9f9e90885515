"""User-facing errors: the CLI prints them as one line and exits with code 2.

Library code raises them with the facts and a fix in the library's own terms. Where the fix is an
action on the command line (a flag to pass, a command to run), the error is one of the subclasses
below, which carry the facts as attributes; `canon_edit.cli` words that fix in flags and commands,
so no library module needs to know the CLI's spelling.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The message names the problem and the fix; the CLI prints it without a traceback.
    """


class ResumeNeeded(UserError):
    """`run` must be (re)fitted by resuming it: it is unfinished, or a file it made needs rebuilding."""

    def __init__(self, message: str, run: Path):
        super().__init__(f"{message}; resume the fit of {run} to finish or rebuild it")
        self.problem, self.run = message, run


class TrainingDiverged(ResumeNeeded):
    """The loss became NaN/inf; the last good checkpoint is kept, so lower learning rates can resume."""

    def __init__(self, message: str, run: Path):
        super().__init__(message, run)
        self.args = (f"{message}; lower the learning rates and resume the fit of {run}",)


class Interrupted(ResumeNeeded):
    """The fit was stopped (Ctrl-C) after a checkpoint was saved."""


class EditStopped(UserError):
    """A long edit stopped before it finished (Ctrl-C, a kill); its checkpoint continues it."""

    def __init__(self, message: str, name: str, can_restart: bool = False):
        restart = f", or start edit {name} over (force)" if can_restart else ""
        super().__init__(f"{message}; continue it by asking for the same edit again with resume{restart}")
        self.problem, self.name, self.can_restart = message, name, can_restart


class EditResumeRefused(UserError):
    """A stopped edit's checkpoint cannot continue what was asked now (other options, another device,
    a damaged file); the edit can be started over."""

    def __init__(self, message: str, name: str):
        super().__init__(f"{message}; resume it as it was asked, or start edit {name} over (force)")
        self.problem, self.name = message, name


class ReplaceRefused(UserError):
    """`target` exists and is canon-edit's own; replacing it needs the caller's explicit consent."""

    def __init__(self, message: str, target: Path, what: str):
        super().__init__(f"{message}; replace it explicitly (force) or choose another {what}")
        self.problem, self.target, self.what = message, target, what
