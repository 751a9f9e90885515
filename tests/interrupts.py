"""Ctrl-C as a user presses it, during a chosen call of a function a loop calls once a step."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any


def ctrl_c_at(fn: Callable[..., Any], call: int) -> Callable[..., Any]:
    """`fn`, sending this process SIGINT during its `call`-th call (from 1), as a Ctrl-C would."""
    calls = 0

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            signal.raise_signal(signal.SIGINT)
        return fn(*args, **kwargs)

    return wrapped
