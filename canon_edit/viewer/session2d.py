"""A client of a 2D run (CanonicalVideo, or a SegmentedVideo of them): the page of view2d.py as the
background image, the canonical toggles, the probe (a click on the page), and the live edit preview.

A preview re-renders the uploaded canonical or keyframe without refitting; "save" hands the same
file to `canon_edit.edit.commands` (the code path of `canon-edit edit`), which takes the run's lock.
In a segmented run an uploaded canonical is the shown segment's, carried to the others as
`canon-edit edit --canonical --segment K` carries it, and a keyframe is lifted as the CLI lifts it;
where the paint stops at a seam, the status panel gives the CLI's note.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from ..canonical import keyframe_textures
from ..edit.commands import (
    EditTarget,
    edit_canonical,
    edit_keyframe,
    edited_bake,
    fit_image,
    painted_canonical,
)
from ..errors import UserError
from ..files import read_json
from ..run import RunFolder
from ..segments import SegmentedVideo
from ..video import read_image
from .session import NO_EDIT, ClientSession
from .view2d import Page, Scene2D, State2D, Video


@dataclass(frozen=True)
class Upload:
    """The previewed file: a canonical layer (`layer`, of segment `segment`) or a keyframe (`frame`)."""

    path: Path
    layer: int | None = None
    frame: int | None = None
    segment: int | None = None


class Session2D(ClientSession):
    def __init__(self, client: Any, run: RunFolder, video: Video, scene: Scene2D):
        super().__init__(client, run, scene.source, video.fps)
        self.video, self.scene = video, scene
        self.state = State2D()
        self.page: Page | None = None
        self.upload: Upload | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="canon-edit-view-"))
        gui = client.gui
        with gui.add_folder("canonical"):
            self.alpha = gui.add_checkbox("alpha", initial_value=False)
            self.coverage = gui.add_checkbox("coverage", initial_value=False)
            self.grid = gui.add_checkbox("uv grid", initial_value=False)
        self.probe = gui.add_markdown(
            "Top: source, reconstruction, edit. Bottom: each layer's canonical. "
            "Click a frame pixel or a canonical texel to probe it."
        )
        with gui.add_folder("edit preview"):
            names = [scene.layer_name(k) for k in range(scene.layers)]
            self.layer = gui.add_dropdown("layer", options=names, initial_value=names[0])
            self.upload_canonical = gui.add_upload_button("upload canonical", mime_type="image/*")
            self.upload_keyframe = gui.add_upload_button("upload keyframe", mime_type="image/*")
            self.name = gui.add_text("edit name", initial_value="")
            self.save = gui.add_button("save edit")
        for box in (self.alpha, self.coverage, self.grid):
            box.on_update(lambda _: self.refresh())
        self.upload_canonical.on_upload(lambda _: self._preview(self.upload_canonical.value, layer=True))
        self.upload_keyframe.on_upload(lambda _: self._preview(self.upload_keyframe.value, layer=False))
        self.save.on_click(lambda _: self._save())
        client.scene.on_click()(self._click)
        client.camera.on_update(lambda _: self._resize())
        self.refresh()

    def refresh(self) -> None:
        self.state = replace(
            self.state,
            frame=self.current_frame(),
            alpha=bool(self.alpha.value),
            coverage=bool(self.coverage.value),
            grid=bool(self.grid.value),
        )
        self.worker.submit(self.state)

    def render(self, request: State2D) -> None:
        page = self.scene.draw(request)
        self.push(page.image)
        self.page = page
        if request.probe is not None:
            self.probe.content = page.probe_text

    def select_edit(self, name: str) -> None:
        try:
            edited = None if name == NO_EDIT else edited_bake(self.run, self.video, name)
        except UserError as e:
            self.report(str(e))
            return
        self.upload = None
        self.state = replace(self.state, edit=edited, edit_label=name)
        self.refresh()

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _resize(self) -> None:
        cam = self.client.camera
        size = (int(cam.image_width), int(cam.image_height))
        if size[0] > 0 and size[1] > 0 and size != (self.state.width, self.state.height):
            self.state = replace(self.state, width=size[0], height=size[1])
            self.refresh()

    def _click(self, event: Any) -> None:
        if self.page is None:
            return
        sx, sy = event.screen_pos
        probe = self.scene.probe_at(self.page, sx * self.page.image.shape[1], sy * self.page.image.shape[0])
        if probe is not None:
            self.state = replace(self.state, probe=probe)
            self.refresh()

    def _base(self) -> Video:
        """The video an upload applies to: with the selected edit, else the reconstruction."""
        name = self.edit.value
        return self.video if name == NO_EDIT else edited_bake(self.run, self.video, name)

    def _preview(self, file: Any, layer: bool) -> None:
        path = self.tmp / Path(file.name).name
        path.write_bytes(file.content)
        t = self.current_frame()
        try:
            image = read_image(path)
            base = self._base()
            if layer:
                k = [self.scene.layer_name(i) for i in range(self.scene.layers)].index(self.layer.value)
                segment = self.scene.part(base, t)[0] if self.scene.segmented else None
                preview = painted_canonical(base, segment, k, image)
                self.upload = Upload(path, layer=k, segment=segment)
                where = f" on {base.segments[segment].name}" if segment is not None else ""
            else:
                edited = fit_image(image[:3], base.H, base.W, f"the edited frame {file.name}")
                preview = with_keyframe(base, t, edited, self.scene.source[t])
                self.upload = Upload(path, frame=t)
                where = f" as frame {t}"
        except UserError as e:
            self.report(str(e))
            return
        self.state = replace(self.state, edit=preview, edit_label=f"preview of {file.name}")
        stops = preview.paint_stops if isinstance(preview, SegmentedVideo) else []
        self.report(
            f"previewing {file.name}{where}; name it and press 'save edit' to keep it"
            + notes([stop.message() for stop in stops])
        )
        self.refresh()

    def _save(self) -> None:
        if self.upload is None:
            self.report("upload an edited canonical or keyframe first")
            return
        base = None if self.edit.value == NO_EDIT else self.edit.value
        target = EditTarget(run=self.run.path, name=self.name.value.strip() or None, from_edit=base)
        try:
            if self.upload.layer is not None:
                folder = edit_canonical(target, self.upload.path, self.upload.layer, self.upload.segment)
            else:
                folder = edit_keyframe(target, int(self.upload.frame or 0), self.upload.path)
        except UserError as e:
            self.report(str(e))
            return
        self.reload_facts()
        self.edit.value = folder.name  # show what was saved, read back from the run
        stops = read_json(folder / "edit.json", "make the edit again").get("paint_stops", [])
        self.report(f"saved edit '{folder.name}' in {folder}" + notes(stops))


def notes(lines: list[str]) -> str:
    """What `canon-edit edit` prints as `canon-edit: note:` lines (where an edit's paint stops), for
    the status panel."""
    return "".join(f"\n\nnote: {line}" for line in lines)


def with_keyframe(video: Video, t: int, edited: Tensor, source: Tensor) -> Video:
    """`video` with frame t as edited in `edited` lifted into it: what `edit_keyframe` saves."""
    if isinstance(video, SegmentedVideo):
        return video.lift_keyframe(t, edited, source, None, None, False)[0]
    return video.with_textures(keyframe_textures(video, source, t, edited))
