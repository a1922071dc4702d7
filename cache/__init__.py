"""PruneScope's persistent result store (content-addressed, atomic, shared by CLI and app)."""

from cache.store import CODE_VERSION, Entry, ResultStore, atomic_save_npy, atomic_write_bytes, default_cache_dir, make_key

__all__ = [
    "CODE_VERSION",
    "Entry",
    "ResultStore",
    "atomic_save_npy",
    "atomic_write_bytes",
    "default_cache_dir",
    "make_key",
]
