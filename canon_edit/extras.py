"""Optional dependencies (pip extras), imported where they are needed.

The diffusion and portrait paths import heavy packages lazily; without their extra installed, the user
gets one `UserError` naming the extra to install instead of a ModuleNotFoundError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import and return `module`; if it cannot be imported, one line: `what` needs the `extra` extra.

    `what` is the feature asking for it, as the sentence's subject ("a diffusion edit", "--body anny").
    A module that is installed but fails on one of its own imports is named with that failure.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        install = f"pip install 'canon-edit[{extra}]'"
        missing = (e.name or module).split(".")[0]
        if missing == module.split(".")[0]:
            raise UserError(
                f"{what} needs the {module} package; install the {extra} extra: {install}"
            ) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"{what} needs the {module} package, which cannot be imported ({first}); "
            f"reinstall the {extra} extra: {install}"
        ) from None
