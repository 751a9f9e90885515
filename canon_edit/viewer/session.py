"""What every client gets, whatever the run's method: the facts, the edits, a frame slider with
play/pause and an fps control, and a render worker of its own.

Subclasses add the method's page and say what a frame change renders (`refresh`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from torch import Tensor

from ..edit.store import edits_made_before, list_edits
from ..run import MappedFrames, RunFolder
from .facts import facts_markdown, run_facts
from .render_worker import RenderWorker

NO_EDIT = "(reconstruction)"
JPEG_QUALITY = 90


class ClientSession:
    """One browser client's GUI, state and worker. `client` is a viser ClientHandle."""

    def __init__(self, client: Any, run: RunFolder, source: Tensor | MappedFrames, fps: float):
        self.client, self.run, self.frames = client, run, source.shape[0]
        self.clip_shape = (source.shape[0], source.shape[2], source.shape[3])
        gui = client.gui
        self.facts = gui.add_markdown("")
        self.frame = gui.add_slider("frame", min=0, max=max(self.frames - 1, 1), step=1, initial_value=0)
        self.playing = gui.add_checkbox("play", initial_value=False)
        self.fps = gui.add_number("fps", initial_value=round(fps, 3), min=0.5, max=120.0, step=0.5)
        self.edit = gui.add_dropdown("edit", options=[NO_EDIT], initial_value=NO_EDIT)
        self.status = gui.add_markdown("")
        self.reload_facts()
        self.pushed = 0  # images pushed so far, and when the last one went out (perf_counter): for tests
        self.pushed_at = 0.0
        self.worker: RenderWorker[Any] = RenderWorker(self.render, self.report, self.follow_up)
        self._stop = threading.Event()
        self._player = threading.Thread(target=self._play, name="canon-edit-player", daemon=True)
        self.frame.on_update(lambda _: self.refresh())
        self.edit.on_update(lambda _: self.select_edit(self.edit.value))
        self._player.start()

    def current_frame(self) -> int:
        """The slider's frame, within the clip (a one-frame clip still gets a 0..1 slider)."""
        return min(int(self.frame.value), self.frames - 1)

    def refresh(self) -> None:
        """Something the page shows changed: queue a render."""
        raise NotImplementedError

    def render(self, request: Any) -> None:
        raise NotImplementedError

    def follow_up(self, request: Any) -> Any | None:
        """The worker was idle after `request`: a follow-up render (full resolution), or None."""
        return None

    def push(self, image: np.ndarray) -> None:
        """Send an H×W×3 uint8 image to this client as the background of its view."""
        self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=JPEG_QUALITY)
        self.pushed += 1
        self.pushed_at = time.perf_counter()

    def select_edit(self, name: str) -> None:
        """The user picked an edit in the dropdown (NO_EDIT: the reconstruction)."""
        self.refresh()

    def report(self, line: str) -> None:
        """One line in the panel: a user error, a saved edit, a failed render."""
        self.status.content = line

    def reload_facts(self) -> None:
        """Re-read run.json, metrics.json and the edits (a fit or another edit may have written them)."""
        edits = list_edits(self.run)
        self.facts.content = facts_markdown(
            run_facts(self.run, self.clip_shape), edits, edits_made_before(self.run, edits)
        )
        current = self.edit.value
        self.edit.options = [NO_EDIT, *edits]
        self.edit.value = current if current in edits else NO_EDIT

    def close(self) -> None:
        self._stop.set()
        self.worker.stop()

    def _play(self) -> None:
        """Advance the frame at the chosen fps while "play" is ticked."""
        while not self._stop.is_set():
            if not self.playing.value:
                self._stop.wait(0.05)
                continue
            self.frame.value = (self.current_frame() + 1) % self.frames  # its callback refreshes
            self._stop.wait(1.0 / max(float(self.fps.value), 0.5))
