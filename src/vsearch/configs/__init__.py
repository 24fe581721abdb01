"""Named YAML presets (package data)."""
