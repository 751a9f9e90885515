"""One render thread per browser client, so a slow render never blocks the server or other clients.

Requests are coalesced: a client that moves its camera faster than frames render gets the newest
view next, never a queue of stale ones. While idle the worker can ask for a follow-up (the
full-resolution frame once the camera has settled).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")


class RenderWorker(Generic[R]):
    """Runs `render(request)` on its own thread for the newest submitted request.

    `idle(last_request)` is called when no request arrived for `idle_s` seconds after a render; it
    returns a follow-up request or None. `on_error` receives one line when a render fails.
    """

    def __init__(
        self,
        render: Callable[[R], None],
        on_error: Callable[[str], None],
        idle: Callable[[R], R | None] | None = None,
        idle_s: float = 0.25,
        name: str = "canon-edit-render",
    ):
        self._render, self._on_error, self._idle, self._idle_s = render, on_error, idle, idle_s
        self._pending: R | None = None
        self._last: R | None = None
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: R) -> None:
        """Replace any pending request with `request`; returns at once."""
        with self._cond:
            self._pending = request
            self._cond.notify()

    def stop(self) -> None:
        """Finish the render in progress, drop pending ones, and end the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _next(self) -> R | None:
        with self._cond:
            while self._pending is None and not self._stop:
                timed_out = not self._cond.wait(timeout=self._idle_s if self._last is not None else None)
                if timed_out and self._pending is None and self._last is not None and self._idle:
                    follow, self._last = self._idle(self._last), None
                    if follow is not None:
                        return follow
            if self._stop:
                return None
            request, self._pending = self._pending, None
            return request

    def _loop(self) -> None:
        while (request := self._next()) is not None:
            try:
                self._render(request)
            except Exception as e:  # a failed frame must not end the client's viewer
                self._on_error(f"render failed: {type(e).__name__}: {e}")
                traceback.print_exc()
            with self._cond:
                self._last = request
