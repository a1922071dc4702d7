"""PruneScope's persistent result store (content-addressed, atomic, shared by CLI and app)."""

from cache.store import (CODE_VERSION, CacheEntryDamaged, Entry, ResultStore, atomic_save_npy, atomic_write_bytes,
                         default_cache_dir, make_key, read_chunk)
from cache.steps import CachedStep, Computed

__all__ = [
    "CODE_VERSION",
    "CacheEntryDamaged",
    "CachedStep",
    "Computed",
    "Entry",
    "ResultStore",
    "atomic_save_npy",
    "atomic_write_bytes",
    "default_cache_dir",
    "make_key",
    "read_chunk",
]
