"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The message names the problem and the fix; the CLI prints it without a traceback.
    """


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""
