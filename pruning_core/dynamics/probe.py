"""What the time-budget planner measures and sizes: the proxy's throughput and its memory needs.

The planner (:mod:`pruning_core.runtime.planner`) lives on the ground floor and knows nothing of
the proxy; the dynamics step owns the proxy, so it hands the planner :data:`PROXY_PROBE`: a few
timed steps of the real :class:`~pruning_core.dynamics.trainer.ProxyTrainer` and the bytes a run
of a setting needs.  Every caller of ``plan_dynamics`` (the CLI, the Score and Evaluate pages,
the Evaluate grid) passes it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from pruning_core.dynamics.models import training_working_bytes
from pruning_core.dynamics.trainer import eval_chunk, synchronize, proxy_trainer
from pruning_core.runtime.devices import resolve_device, resolve_precision
from pruning_core.runtime.planner import Rates

PROBE_STEPS = 8
"""Timed steps after two warm-up steps; fewer read 2x slow on a CPU (first-iteration allocator and oneDNN costs)."""

EMBEDDING_DIM = 512
"""The embedding width a probe on CLIP embeddings is measured and sized at (CLIP ViT-B's stands for any)."""


class ProxyProbe:
    """The proxy's side of the planner's ``Probe``: training/evaluation rates and memory of one setting."""

    version = 4
    """Part of the probe's cache key: a change to what is timed makes earlier measurements invalid."""

    def rates(self, config: Any, num_classes: int) -> Rates:
        """Training and evaluation samples/s of ``config``'s proxy on its device, from timed steps on random inputs.

        Runs the real trainer (same precision, memory layout, augmentation and thread policy as a real
        run) for two warm-up and :data:`PROBE_STEPS` timed training steps, then one evaluation pass as the
        recording run makes it (one folded model, chunks of ``eval_chunk``), each step and chunk timed alone;
        the medians, so a burst of load from another process moves them little.
        """
        dev = resolve_device(config.device)
        precision = resolve_precision(dev, config.precision)
        bs = int(config.batch_size)
        chunk = eval_chunk(dev, bs)
        n = max(bs, chunk) * (PROBE_STEPS + 2)
        rng = np.random.default_rng(0)
        if config.arch == "resnet9":
            x = rng.integers(0, 256, size=(n, config.image_size, config.image_size, 3), dtype=np.uint8)
        else:
            x = rng.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
        y = rng.integers(0, num_classes, size=n)
        with proxy_trainer(x, y, device=dev, seed=0, epochs=1, num_classes=num_classes, arch=config.arch,
                           width=config.width, batch_size=bs, precision=precision) as trainer:
            batches = torch.arange(bs * (PROBE_STEPS + 2), device=trainer.dev).view(-1, bs)
            stamps = []
            for batch in batches:  # the first two warm up: allocator, oneDNN/cuDNN kernel choice
                stamps.append(time.perf_counter())
                trainer.train_epoch(batch)
            stamps.append(time.perf_counter())
            train_s = np.diff(stamps)[2:]
            stamps = [time.perf_counter()]
            for _ in trainer.logits():  # the first two chunks warm up (the first also folds the model)
                synchronize(trainer.dev)
                stamps.append(time.perf_counter())
            eval_s = np.diff(stamps)[2:]
        return Rates(train=bs / max(float(np.median(train_s)), 1e-9), eval=chunk / max(float(np.median(eval_s)), 1e-9))

    def memory(self, config: Any, n_samples: int, num_classes: int) -> tuple[int, int]:
        """(bytes of the training data, bytes of one step's working set) of ``config`` over ``n_samples``.

        The data is what :class:`~pruning_core.dynamics.device_data.DeviceData` holds: uint8 images, unpadded
        (or float32 embeddings); the working set is :func:`~pruning_core.dynamics.models.training_working_bytes`.
        """
        precision = resolve_precision(resolve_device(config.device), config.precision)
        if config.arch == "resnet9":
            data = n_samples * config.image_size ** 2 * 3
        else:
            data = n_samples * EMBEDDING_DIM * 4
        working = training_working_bytes(config.arch, batch_size=config.batch_size, width=config.width,
                                         image_size=config.image_size, in_dim=EMBEDDING_DIM,
                                         num_classes=num_classes, precision=precision)
        return int(data), working


PROXY_PROBE = ProxyProbe()
