"""A client of a portrait run: the avatar rendered on the server from the client's camera and pushed
as the background image (the browser cannot draw neural-texture Gaussians itself), at a reduced
resolution while the camera moves and at full resolution once it stops.

The bake is used by duck typing (`render_view`, `source_camera`), so the core never imports the
portrait plugin; a Camera for any view is the source camera with its fields replaced. Picking an edit
in the dropdown swaps in the edited bake (`edit.commands.edited_bake`), so an edited avatar is
orbited like the reconstruction.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..edit.commands import edited_bake
from ..errors import UserError
from ..run import MappedFrames, RunFolder
from ..video import to_uint8 as frames_uint8
from .camera import fov_y, intrinsics, look_from_viewmat, matrix_quaternion, viewmat_from_pose
from .policy import ResolutionPolicy, moving_scale, scaled_size, update_cost
from .session import NO_EDIT, ClientSession

MAX_SIDE = 960  # longest side of a full-resolution view


@dataclass(frozen=True)
class ViewRequest:
    frame: int
    wxyz: tuple[float, float, float, float]
    position: tuple[float, float, float]
    fov: float
    width: int
    height: int
    scale: float


def to_uint8(image: Tensor) -> np.ndarray:
    """3×H×W in [0, 1] → H×W×3 uint8."""
    return frames_uint8(image).permute(1, 2, 0).numpy()


class SessionPortrait(ClientSession):
    def __init__(
        self, client: Any, run: RunFolder, bake: Any, source: Tensor | MappedFrames, policy: ResolutionPolicy
    ):
        super().__init__(client, run, source, bake.fps)
        self.bake, self.source, self.policy = bake, source, policy
        self.shown = bake  # the reconstruction, or the edit picked in the dropdown
        self.full_ms: float | None = None
        self.mesh: Any = None  # the body mesh's scene handle while it is shown
        self.overlay_frame: int | None = None  # the frame the panel and the overlays show (None: redraw)
        self.panel = client.gui.add_image(
            to_uint8(torch.cat([source[0], source[0]], 2)), label="source | reconstruction"
        )
        self.home = client.gui.add_button("go to the source camera")
        self.home.on_click(lambda _: self.to_source_camera())
        self.show_frustum = client.gui.add_checkbox("source camera", initial_value=True)
        self.show_mesh = client.gui.add_checkbox(
            "body mesh", initial_value=False, disabled=not callable(getattr(bake, "body_mesh", None))
        )
        for box in (self.show_frustum, self.show_mesh):
            box.on_update(lambda _: self.redraw_overlays())
        self.to_source_camera()
        client.camera.on_update(lambda _: self.refresh(moving=True))
        self.refresh()

    def to_source_camera(self) -> None:
        """Put the client's camera where the frame's tracked camera was."""
        cam = self.bake.source_camera(self.current_frame())
        distance = float(cam.viewmat[:3, 3].norm())
        position, look_at, up = look_from_viewmat(cam.viewmat, distance)
        with self.client.atomic():
            self.client.camera.fov = fov_y(cam.K, cam.height)
            self.client.camera.position = position.numpy().astype(np.float64)
            self.client.camera.look_at = look_at.numpy().astype(np.float64)
            self.client.camera.up_direction = up.numpy().astype(np.float64)

    def select_edit(self, name: str) -> None:
        try:
            self.shown = self.bake if name == NO_EDIT else edited_bake(self.run, self.bake, name)
        except UserError as e:
            self.report(str(e))
            return
        self.redraw_overlays()

    def redraw_overlays(self) -> None:
        self.overlay_frame = None
        self.refresh()

    def refresh(self, moving: bool = False) -> None:
        cam = self.client.camera
        if cam.update_timestamp == 0.0 or cam.image_width <= 0:
            return
        self.worker.submit(
            ViewRequest(
                frame=self.current_frame(),
                wxyz=tuple(float(v) for v in cam.wxyz),
                position=tuple(float(v) for v in cam.position),
                fov=float(cam.fov),
                width=int(cam.image_width),
                height=int(cam.image_height),
                scale=moving_scale(self.policy, self.full_ms) if moving else 1.0,
            )
        )

    def follow_up(self, request: ViewRequest) -> ViewRequest | None:
        return dataclasses.replace(request, scale=1.0) if request.scale < 1.0 else None

    def render(self, request: ViewRequest) -> None:
        fit = min(1.0, MAX_SIDE / max(request.width, request.height))
        width, height = scaled_size(request.width, request.height, fit * request.scale)
        camera = dataclasses.replace(
            self.bake.source_camera(request.frame),
            viewmat=viewmat_from_pose(request.wxyz, request.position),
            K=intrinsics(request.fov, width, height),
            width=width,
            height=height,
        )
        start = time.perf_counter()
        shown = self.shown
        image = shown.render_view(request.frame, camera)
        ms = (time.perf_counter() - start) * 1000
        self.full_ms = update_cost(self.full_ms, ms, request.scale, self.policy)
        self.push(to_uint8(image))
        if request.frame != self.overlay_frame:
            self.overlay_frame = request.frame
            recon = shown.render([request.frame])[0]
            self.panel.image = to_uint8(torch.cat([self.source[request.frame], recon], 2))
            self.draw_overlays(request.frame)

    def draw_overlays(self, frame: int) -> None:
        """The frame's source camera as a frustum and, when ticked, the tracked body mesh (3D scene).

        The frustum has no image: seen from the source camera itself it would cover the view.
        """
        scene, cam = self.client.scene, self.bake.source_camera(frame)
        r = cam.viewmat[:3, :3].float()
        scene.add_camera_frustum(
            "/source_camera",
            fov=fov_y(cam.K, cam.height),
            aspect=cam.width / cam.height,
            scale=0.1 * float(cam.viewmat[:3, 3].norm()),
            wxyz=matrix_quaternion(r.T),
            position=(-r.T @ cam.viewmat[:3, 3].float()).numpy(),
            color=(255, 160, 0),
            visible=bool(self.show_frustum.value),
        )
        if self.show_mesh.value:
            vertices, faces = self.bake.body_mesh(frame)
            scene.add_mesh_simple(
                "/body_mesh",
                vertices.numpy(),
                faces.numpy(),
                color=(90, 200, 255),
                wireframe=True,
                opacity=0.6,
            )
        else:
            scene.add_mesh_simple(
                "/body_mesh", np.zeros((3, 3)), np.zeros((1, 3), dtype=np.int64), visible=False
            )
