"""CLIP weights and the batched, resumable image / text embeddings."""
