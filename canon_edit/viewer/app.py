"""The viser server: opens the run read-only, and gives every browser client a session of its own.

The run is opened without its lock and without requiring a finished fit, so a run being written can
be watched; until its bake exists the page shows the facts and the source frames, and "refresh"
picks the bake up once the fit has written it.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from pathlib import Path
from typing import Any

from ..canonical import CanonicalVideo
from ..errors import UserError
from ..extras import require
from ..representation import Bake, load_bake
from ..run import RunFolder
from ..segments import SegmentedVideo
from ..video import Clip
from .canvas import compose, layout
from .policy import ResolutionPolicy
from .session import ClientSession
from .session2d import Session2D
from .session_portrait import SessionPortrait
from .view2d import Scene2D


class Viewer:
    """`canon-edit view RUN` as an object: start it, read `url`, `stop` it (tests start one per test)."""

    def __init__(self, run_path: str | Path, host: str = "127.0.0.1", port: int = 8080):
        viser = require("viser", "viewer", "canon-edit view")
        self.run = RunFolder.open(run_path, need_done=False)
        stored = self.run.stored_clip()  # its frames read as they are shown, not held whole
        self.source = stored.frames if isinstance(stored, Clip) else stored.mapped_frames()
        self.policy = ResolutionPolicy()
        self._lock = threading.Lock()
        self.bake, self.scene = self._load()
        self.sessions: dict[int, ClientSession] = {}
        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner; `serve` prints the one URL line
            self.server = viser.ViserServer(
                host=host, port=port, label=f"canon-edit: {self.run.path.name}", verbose=False
            )
        self.server.gui.configure_theme(control_width="large", show_logo=False)
        self.server.gui.main_panel.dock_right()  # the panel must not cover the page the probe clicks on
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.close()
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()

    def _load(self) -> tuple[Bake | None, Scene2D | None]:
        """The bake if the fit has written it yet (None while fitting), and the 2D scene for a 2D bake."""
        try:
            bake = load_bake(self.run)
        except UserError as e:
            if self.run.info().get("status") == "done":
                raise
            print(
                f"canon-edit: note: no bake yet ({str(e).split(';')[0]}); press 'refresh' later",
                file=sys.stderr,
            )
            return None, None
        return bake, Scene2D(bake, self.source) if isinstance(bake, CanonicalVideo | SegmentedVideo) else None

    def _connect(self, client: Any) -> None:
        with self._lock:
            if self.scene is not None:
                session: ClientSession = Session2D(client, self.run, self.bake, self.scene)
            elif self.bake is not None and callable(getattr(self.bake, "render_view", None)):
                session = SessionPortrait(client, self.run, self.bake, self.source, self.policy)
            else:
                session = SourceOnly(client, self.run, self.source, self.bake)
            self.sessions[client.client_id] = session
        refresh = client.gui.add_button("refresh")
        refresh.on_click(lambda _: self._reload(client))

    def reload(self) -> None:
        """Re-read the bake (a fit in progress may have written it since)."""
        with self._lock:
            self.bake, self.scene = self._load()

    def _reload(self, client: Any) -> None:
        """The client's "refresh": re-read the run; a client whose page changes kind reloads the page."""
        had = self.bake is not None
        self.reload()
        session = self.sessions.get(client.client_id)
        if session is not None:
            session.reload_facts()
            if not had and self.bake is not None:
                session.report("the bake is ready: reload the page to view it")

    def _disconnect(self, client: Any) -> None:
        with self._lock:
            session = self.sessions.pop(client.client_id, None)
        if session is not None:
            session.close()


class SourceOnly(ClientSession):
    """A run without a bake yet, or with a bake the viewer cannot render: facts and source frames."""

    def __init__(self, client: Any, run: RunFolder, source: Any, bake: Bake | None):
        super().__init__(client, run, source, float(run.info().get("fps") or 30.0))
        self.source = source
        if bake is not None:
            self.report(f"this run's bake ({type(bake).__name__}) has no view here; the source is shown")
        self.refresh()

    def refresh(self) -> None:
        self.worker.submit(self.current_frame())

    def render(self, request: int) -> None:
        cam = self.client.camera
        width, height = (cam.image_width, cam.image_height) if cam.image_width > 0 else (1280, 720)
        frame = self.source[min(request, self.source.shape[0] - 1)]
        rect = layout([[(frame.shape[2], frame.shape[1])]], width, height)[0]
        self.push(compose([frame], rect, width, height))


def serve(run_path: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the viewer until Ctrl-C."""
    viewer = Viewer(run_path, host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"canon-edit: warning: the viewer listens on {host}; anyone who can reach it sees this run",
            file=sys.stderr,
        )
    print(f"canon-edit view: {viewer.url}  (Ctrl-C stops it)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
