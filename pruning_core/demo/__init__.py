"""The built-in offline demo: a procedural dataset and its tiny open_clip model."""
