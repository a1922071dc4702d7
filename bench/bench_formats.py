"""Containers read in place vs the image folder: CIFAR-10's 50,000 training images as one parquet file and as
10 WebDataset shards, ``validate`` (load + check every image) and the dynamics step's decoding side by side.

Usage:
  python bench/bench_formats.py write [--src /work/data/cifar10/train] [--out /work/data/formats]
  python bench/bench_formats.py run   [--src ...] [--out ...] [--rounds 2]

``write`` makes ``OUT/cifar10-train.parquet`` (HF layout: an ``image`` struct {bytes, path}, an integer ``label``
with ClassLabel names in the schema's ``huggingface`` metadata, row groups of 1,000 as ``datasets`` writes
image data in small groups) and ``OUT/shards/cifar10-train-{000000..000009}.tar`` (``.jpg`` + ``.cls``), from
the JPEG bytes as they are (nothing re-encoded).  ``run`` measures each format in its own child process
(peak RSS is then that format's alone), rounds interleaved so the shared machine's load hits all of them,
and prints each figure, the best of the rounds, and the ratios to the folder.  ``written MB`` is the child's
``/proc/self/io`` write_bytes: containers must be read in place, so nothing is extracted to disk.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARDS = 10
SHARD_PATTERN = "shards/cifar10-train-{000000..000009}.tar"


def write(src: Path, out: Path) -> None:
    """The parquet file and the shards, from the folder's JPEG bytes (sorted by class then file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    files = [(c, f) for ci, c in enumerate(classes) for f in sorted((src / c).iterdir())]
    out.mkdir(parents=True, exist_ok=True)
    features = {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    with pq.ParquetWriter(out / "cifar10-train.parquet", schema) as writer:
        for start in range(0, len(files), 1000):
            part = files[start:start + 1000]
            images = [{"bytes": f.read_bytes(), "path": f"{c}/{f.name}"} for c, f in part]
            writer.write_table(pa.table({"image": images, "label": [classes.index(c) for c, _ in part]}, schema=schema))
    (out / "shards").mkdir(exist_ok=True)
    per = -(-len(files) // SHARDS)
    order = sorted(range(len(files)), key=lambda i: (i * 7919) % len(files))  # classes mixed, as shards are
    for s in range(SHARDS):
        with tarfile.open(out / "shards" / f"cifar10-train-{s:06d}.tar", "w") as tar:
            for i in order[s * per:(s + 1) * per]:
                c, f = files[i]
                for ext, data in (("jpg", f.read_bytes()), ("cls", str(classes.index(c)).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    print(f"wrote {len(files):,} images to {out / 'cifar10-train.parquet'} and {SHARDS} shards in {out / 'shards'}")


def measure(source: str) -> dict:
    """In this (child) process: validate, then decode at 32 px as the dynamics step does; times, RSS, writes."""
    import resource

    from pruning_core.data.datasets import load_dataset
    from pruning_core.data.images import load_image_array

    def written() -> int:
        text = Path("/proc/self/io").read_text()
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("write_bytes")))

    w0 = written()
    t0 = time.perf_counter()
    dataset = load_dataset(source)
    t1 = time.perf_counter()
    decoded, failed = load_image_array(dataset.image_refs(), 32)
    t2 = time.perf_counter()
    return {"n": len(dataset), "valid": dataset.report.summary(), "failed": len(failed), "sum": int(decoded.sum()),
            "validate_s": t1 - t0, "decode_s": t2 - t1,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "written_mb": (written() - w0) / 2**20}


def run(src: Path, out: Path, rounds: int) -> None:
    sources = {"folder": str(src), "parquet": str(out / "cifar10-train.parquet"), "shards": str(out / SHARD_PATTERN)}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    best: dict[str, dict] = {}
    print(f"load before: {os.getloadavg()}")
    for r in range(rounds):
        for name, source in sources.items():
            done = subprocess.run([sys.executable, __file__, "child", source], capture_output=True, text=True, env=env)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"round {r + 1} {name:8s} validate {result['validate_s']:6.2f} s  decode {result['decode_s']:6.2f} s  "
                  f"peak {result['peak_mb']:6.0f} MB  written {result['written_mb']:.1f} MB  [{result['valid']}; "
                  f"failed {result['failed']}; pixel sum {result['sum']}]  load {os.getloadavg()[0]:.2f}", flush=True)
            keep = best.setdefault(name, dict(result))
            for key in ("validate_s", "decode_s", "peak_mb", "written_mb"):
                keep[key] = min(keep[key], result[key])
    base = best["folder"]
    print("best of rounds, ratio to the folder:")
    for name, result in best.items():
        print(f"  {name:8s} validate {result['validate_s']:6.2f} s ({result['validate_s'] / base['validate_s']:.2f}x)  "
              f"decode {result['decode_s']:6.2f} s ({result['decode_s'] / base['decode_s']:.2f}x)  "
              f"peak {result['peak_mb']:6.0f} MB ({result['peak_mb'] / base['peak_mb']:.2f}x)  "
              f"written {result['written_mb']:.1f} MB")
    print(f"load after: {os.getloadavg()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "run", "child"])
    parser.add_argument("source", nargs="?")
    parser.add_argument("--src", type=Path, default=Path("/work/data/cifar10/train"))
    parser.add_argument("--out", type=Path, default=Path("/work/data/formats"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.action == "child":
        print(json.dumps(measure(args.source)))
        return 0
    if not args.src.is_dir():
        print(f"skip: no image folder at {args.src}")
        return 0
    write(args.src, args.out) if args.action == "write" else run(args.src, args.out, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
