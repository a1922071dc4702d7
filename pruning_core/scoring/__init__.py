"""The scoring flow: the score table and its sidecar, orchestration with the cache, detection metrics."""
