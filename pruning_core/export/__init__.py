"""Export: the kept subset as tables, folders and a zip, and the manifest that reproduces it."""
