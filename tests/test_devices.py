"""The precision policy: bf16 where the hardware computes it, an fp32 head, and matching rankings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pruning_core import devices
from pruning_core.dynamics import dynamics_scores, train_and_record
from pruning_core.dynamics.models import ResNet9


def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path):
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    devices.cpu_has_bf16.cache_clear()
    assert devices.cpu_has_bf16(str(with_amx)) and not devices.cpu_has_bf16(str(without))
    assert not devices.cpu_has_bf16(str(tmp_path / "missing"))
    devices.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_the_hardware(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert devices.resolve_precision(cpu) == expected
    assert devices.resolve_precision(cpu, "fp32") == "fp32"  # the switch to force fp32
    autocast = devices.autocast(cpu)
    assert isinstance(autocast, torch.autocast) == has_bf16
    with pytest.raises(ValueError, match="precision"):
        devices.resolve_precision(cpu, "fp8")


@pytest.mark.parametrize("major, expected", [(7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_on_cuda_needs_compute_capability_8(monkeypatch, major, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    assert devices.resolve_precision(torch.device("cuda", 0)) == expected


def test_the_head_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = ResNet9(4, width=8).eval()
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.float32


def test_backward_under_strict_determinism_on_cpu():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        model = ResNet9(3, width=8)
        model(torch.randn(4, 3, 16, 16)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        torch.use_deterministic_algorithms(before)


def test_bf16_and_fp32_rank_the_noisy_samples_alike(one_thread):
    rng = np.random.default_rng(0)
    n, c = 384, 4
    y_true = rng.integers(0, c, size=n)
    x = (rng.integers(0, 50, size=(n, 16, 16, 3)) + 50 * y_true[:, None, None, None]).astype(np.uint8)
    noisy = rng.random(n) < 0.15
    y = np.where(noisy, (y_true + 1) % c, y_true)
    kw = dict(device="cpu", width=8, batch_size=32, num_classes=c, epochs=6)
    aum = {p: dynamics_scores(train_and_record(x, y, precision=p, **kw))[0]["dynamics.aum"].to_numpy()
           for p in ("fp32", "bf16")}
    rho = spearmanr(aum["fp32"], aum["bf16"]).statistic
    assert rho > 0.9
    from sklearn.metrics import roc_auc_score

    aurocs = {p: roc_auc_score(noisy, -a) for p, a in aum.items()}
    assert aurocs["fp32"] > 0.9 and abs(aurocs["bf16"] - aurocs["fp32"]) < 0.03
