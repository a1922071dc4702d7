"""CLIP image-embedding throughput from files vs the pure model forward of the same model.

The ratio (pipeline / forward) shows how much decoding and preprocessing cost on top of the
model; near 1.0 means the model is the bottleneck.

    python bench/bench_embeddings.py --data ../shared/data/cifar10/train_sym20.csv --root /tmp/cifar \
        --model ViT-B-32 --limit 2000 --device auto
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from pruning_core.embeddings.clip_model import load_clip
from pruning_core.data.datasets import load_dataset
from pruning_core.embeddings.encode import embed_images


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--root", default=None)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="embed only the first N images (0 = all)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    dataset = load_dataset(args.data, root=args.root, check_images=False)
    paths = dataset.abspaths()[: args.limit or None]
    encoder = load_clip(args.model, args.pretrained, device=args.device)
    device = encoder.device

    # Pure forward: preprocessed-size random tensors already on the device.
    size = encoder.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    batch = torch.randn(args.batch_size, 3, size, size, device=device)
    encoder.encode_image_batch(batch)  # warm-up
    sync(device)
    n_fwd = max(2, min(20, len(paths) // args.batch_size))
    start = time.perf_counter()
    for _ in range(n_fwd):
        encoder.encode_image_batch(batch)
    sync(device)
    forward_rate = n_fwd * args.batch_size / (time.perf_counter() - start)

    start = time.perf_counter()
    emb, ok = embed_images(paths, encoder, batch_size=args.batch_size, num_workers=args.workers)
    sync(device)
    pipeline_rate = len(paths) / (time.perf_counter() - start)

    print(f"machine: {platform.node()} {torch.get_num_threads()} threads, device={device}")
    print(f"model: {args.model} ({args.pretrained}), batch {args.batch_size}, images {len(paths):,} ({ok.sum():,} ok)")
    print(f"pure forward:     {forward_rate:8.1f} images/s")
    print(f"files -> vectors: {pipeline_rate:8.1f} images/s")
    print(f"ratio pipeline/forward: {pipeline_rate / forward_rate:.2f}")


if __name__ == "__main__":
    main()
