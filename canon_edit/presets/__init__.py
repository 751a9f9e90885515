"""YAML presets of the core (edit modes under edit/), shipped inside the package."""
