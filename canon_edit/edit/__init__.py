"""Edits of a baked canonical asset; each lands in RUN/edits/NAME/ with its video."""
