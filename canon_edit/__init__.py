"""canon-edit: edit a video by editing one canonical asset and re-rendering it to every frame."""

__version__ = "0.1.0"
