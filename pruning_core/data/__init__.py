"""Data in: load an image folder or a manifest, validate it, decode images."""
