"""YAML presets of the built-in representations (codef, atlas, portrait and their demo variants)."""
