"""The precision policy: bf16 where the hardware computes it, an fp32 head, and matching rankings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pruning_core.runtime import devices
from pruning_core.dynamics import dynamics_scores, train_and_record
from pruning_core.dynamics.config import DynamicsConfig
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


GB = 10**9
T4 = devices.DeviceFacts("cuda", 0, "Tesla T4", (7, 5), 16 * GB, 15 * GB, cpus=2, shm_bytes=64 * 2**20)
V100 = devices.DeviceFacts("cuda", 0, "Tesla V100-SXM2-32GB", (7, 0), 32 * GB, 31 * GB, cpus=8, shm_bytes=8 * GB)
A100 = devices.DeviceFacts("cuda", 0, "NVIDIA A100-SXM4-80GB", (8, 0), 80 * GB, 79 * GB, cpus=16, shm_bytes=32 * GB)
H100 = devices.DeviceFacts("cuda", 1, "NVIDIA H100 80GB HBM3", (9, 0), 80 * GB, 79 * GB, cpus=32, shm_bytes=32 * GB)
RTX = devices.DeviceFacts("cuda", 0, "NVIDIA GeForce RTX 3090", (8, 6), 24 * GB, 22 * GB, cpus=12, shm_bytes=16 * GB)
MPS = devices.DeviceFacts("mps", None, "Apple GPU", None, 21 * GB, 12 * GB, cpus=10, shm_bytes=None)
CPU2 = devices.DeviceFacts("cpu", None, "CPU", None, 24 * GB, 20 * GB, cpus=2, shm_bytes=64 * 2**20)
CPU_AMX = devices.DeviceFacts("cpu", None, "CPU", None, 256 * GB, 200 * GB, cpu_bf16=True, cpus=56, shm_bytes=64 * GB)

CIFAR = 50_000 * 32 * 32 * 3  # uint8 bytes
IMAGENET64 = 1_281_167 * 64 * 64 * 3


@pytest.mark.parametrize("facts, precision, scaler, workers", [
    (T4, "fp16", True, 1), (V100, "fp16", True, 7), (A100, "bf16", False, 15), (H100, "bf16", False, 16),
    (RTX, "bf16", False, 11), (MPS, "fp32", False, 9), (CPU2, "fp32", False, 1), (CPU_AMX, "bf16", False, 2),
])
def test_the_policy_per_device(facts, precision, scaler, workers):
    policy = devices.decide(facts)
    assert (policy.precision, policy.grad_scaler, policy.max_loader_workers) == (precision, scaler, workers)
    assert devices.decide(facts, "fp32").precision == "fp32" and not devices.decide(facts, "fp32").grad_scaler
    assert precision in policy.describe() and facts.describe()


def test_knn_blocks_grow_with_device_memory():
    blocks = {name: devices.decide(f).knn_block_bytes for name, f in
              {"cpu": CPU2, "t4": T4, "rtx": RTX, "h100": H100}.items()}
    assert blocks["cpu"] == 256 * 2**20
    assert blocks["cpu"] < blocks["t4"] < blocks["rtx"] < blocks["h100"] == devices.MAX_KNN_BLOCK_BYTES


def test_training_data_stays_on_the_device_only_when_it_fits_with_headroom():
    working = 3 * GB
    assert devices.decide(T4).data_on_device(CIFAR, working)
    assert not devices.decide(T4).data_on_device(IMAGENET64, working)  # 15.7 GB on a 16 GB card
    assert not devices.decide(RTX).data_on_device(IMAGENET64, working)  # 18.7 GB of 22 free: no headroom
    assert devices.decide(H100).data_on_device(IMAGENET64, working)
    assert devices.decide(CPU2).data_on_device(IMAGENET64, working)  # the CPU's data is in RAM anyway


def test_loader_batches_in_flight_fit_dev_shm():
    clip_batch = 256 * 3 * 224 * 224 * 4  # 154 MB of fp32 pixels
    assert devices.decide(T4).loader(clip_batch) == (0, 0)  # Docker's 64 MB: decode in the main process
    assert devices.decide(T4).loader(32 * 3 * 224 * 224 * 4) == (1, 1)
    workers, prefetch = devices.decide(A100).loader(clip_batch)
    assert (workers, prefetch) == (15, 4) and workers * prefetch * clip_batch <= A100.shm_bytes / 2
    assert devices.decide(MPS).loader(clip_batch) == (9, 4)  # no /dev/shm on macOS


def test_facts_read_here_are_the_cpus_affinity(monkeypatch):
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    facts = devices.read_facts(torch.device("cpu"))
    assert facts.type == "cpu" and facts.cpus == 3 and facts.total_memory >= facts.free_memory > 0


@pytest.mark.parametrize("capability, arch_list, missing", [
    ((7, 0), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], True),  # V100 on the cu130 wheel
    ((7, 5), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], False),
    ((8, 9), ["sm_80", "sm_86", "sm_90"], False),  # an sm_86 cubin runs on sm_89
    ((12, 0), ["sm_70", "sm_80", "sm_90"], True),
    ((12, 0), ["sm_80", "sm_90", "compute_90"], False),  # PTX compiles for newer GPUs
])
def test_missing_kernels_from_the_arch_list(capability, arch_list, missing):
    assert devices.missing_kernels(capability, arch_list) == missing


def _fake_gpus(monkeypatch, capabilities, arch_list=("sm_75", "sm_80", "sm_90")):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"GPU{i}")

    def capability(i=None):
        asked.append(i)
        return capabilities[i]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    return asked


def test_cuda_n_is_honoured_with_its_own_capability(monkeypatch):
    asked = _fake_gpus(monkeypatch, [(8, 0), (7, 0)])
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match=r"GPU1 \(sm_70\).*sm_75, sm_80, sm_90.*whl/cu126"):
        devices.resolve_device("cuda:1")
    assert asked[-1] == 1
    with pytest.raises(RuntimeError, match="only 2 CUDA GPU"):
        devices.resolve_device("cuda:2")


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        devices.resolve_device("mps")
    _fake_gpus(monkeypatch, [(9, 0)])
    assert devices.resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("warn_only", [False, True])
def test_determinism_flags_are_restored_exactly(monkeypatch, warn_only):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    caller = devices.DeterminismFlags(cudnn_benchmark=False, cudnn_deterministic=False,
                                      deterministic_algorithms=True, warn_only=warn_only)  # as a caller set them
    before = devices.DeterminismFlags.current()
    caller.apply()
    try:
        with devices.determinism(torch.device("cuda", 0), deterministic=True):
            inside = devices.DeterminismFlags.current()
            assert inside.deterministic_algorithms and inside.warn_only and inside.cudnn_deterministic
            assert not inside.cudnn_benchmark
            assert devices.os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert devices.DeterminismFlags.current() == caller
        with devices.determinism(torch.device("cuda", 0), deterministic=False):
            assert torch.backends.cudnn.benchmark
        assert devices.DeterminismFlags.current() == caller
    finally:
        before.apply()


def test_the_head_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = ResNet9(4, width=8).eval()
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.float32


def test_proxy_trains_under_strict_determinism_and_leaves_the_flags(one_thread):
    before = devices.DeterminismFlags.current()
    torch.use_deterministic_algorithms(True)  # strict: an op without a deterministic kernel raises
    try:
        strict = devices.DeterminismFlags.current()
        model = ResNet9(3, width=8)
        model(torch.randn(4, 3, 16, 16)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(64, 16, 16, 3), dtype=np.uint8)
        rec = train_and_record(x, rng.integers(0, 3, 64), arch="resnet9", epochs=1, seed=0, device="cpu", width=8,
                               batch_size=32, precision="auto", deterministic=True)
        assert np.isfinite(rec.loss).all()
        assert devices.DeterminismFlags.current() == strict
    finally:
        before.apply()


def test_bf16_and_fp32_rank_the_noisy_samples_alike(one_thread):
    rng = np.random.default_rng(0)
    n, c = 384, 4
    y_true = rng.integers(0, c, size=n)
    x = (rng.integers(0, 50, size=(n, 16, 16, 3)) + 50 * y_true[:, None, None, None]).astype(np.uint8)
    noisy = rng.random(n) < 0.15
    y = np.where(noisy, (y_true + 1) % c, y_true)
    kw = DynamicsConfig(device="cpu", width=8, batch_size=32, epochs=6).trainer_options()
    window = DynamicsConfig().dynunc_window
    aum = {p: dynamics_scores(train_and_record(x, y, **{**kw, "precision": p}, num_classes=c),
                              dynunc_window=window)[0]["dynamics.aum"].to_numpy()
           for p in ("fp32", "bf16")}
    rho = spearmanr(aum["fp32"], aum["bf16"]).statistic
    assert rho > 0.9
    from sklearn.metrics import roc_auc_score

    aurocs = {p: roc_auc_score(noisy, -a) for p, a in aum.items()}
    assert aurocs["fp32"] > 0.9 and abs(aurocs["bf16"] - aurocs["fp32"]) < 0.03


def test_fp16_with_a_grad_scaler_keeps_the_adapruner_mask_step_outside_it(one_thread):
    """AdaPruner's unit-RMS mask step is scale-free; through ``scaler.unscale_`` it would be divided by 65,536."""
    from synthetic import gaussian_embeddings

    from pruning_core.subset_training import AdaPruner

    x, y, _ = gaussian_embeddings(n=2000, dim=16, classes=4, noise=0.2, seed=1)
    pruner = AdaPruner(0.5, arch="mlp", warmup_epochs=2, mask_epochs=8, batch_size=128, width=64, seed=0,
                       device="cpu", precision="fp16").fit(x, y)
    assert pruner.train_meta_["precision"] == "fp16" and pruner.train_meta_["device_policy"]["grad_scaler"]
    assert abs(pruner.kept_fraction_ - 0.5) <= 0.02
    assert np.ptp(pruner.mask_logits_) > 1.0  # the mask moved


def test_the_host_memory_fallback_trains_to_the_same_record(monkeypatch, one_thread):
    from pruning_core.dynamics.device_data import DeviceData

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 96)
    kw = dict(arch="resnet9", epochs=2, seed=0, device="cpu", width=8, batch_size=32, precision="fp32", eval_x=x[:10])
    on_device = train_and_record(x, y, **kw)
    fetched = []
    host_rows = DeviceData._rows

    def spy(self, idx):
        fetched.append(self.on_device)
        return host_rows(self, idx)

    monkeypatch.setattr(devices.DevicePolicy, "data_on_device", lambda self, data_bytes, working_bytes=0: False)
    monkeypatch.setattr(DeviceData, "_rows", spy)
    on_host = train_and_record(x, y, **kw)
    assert on_device.meta["data_on_device"] and not on_host.meta["data_on_device"]
    assert fetched and not any(fetched)  # every batch came from host memory
    for name in ("prob", "margin", "loss", "final_logits"):
        np.testing.assert_array_equal(getattr(on_host, name), getattr(on_device, name))
    np.testing.assert_array_equal(on_host.heldout_probs, on_device.heldout_probs)


def test_crops_reflect_like_a_padded_copy():
    from pruning_core.dynamics.device_data import DeviceData

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 12, 12, 3), dtype=np.uint8)
    data = DeviceData(x, torch.device("cpu"), crop_pad=2, flip=True)
    gen = torch.Generator().manual_seed(0)
    out = data.augmented(torch.arange(8), gen) * data.std + data.mean
    padded = np.pad(x.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    gen = torch.Generator().manual_seed(0)  # the same draws: offsets, then flips
    oy = torch.randint(0, 5, (8, 1), generator=gen)[:, 0]
    ox = torch.randint(0, 5, (8, 1), generator=gen)[:, 0]
    flip = (torch.rand((8, 1), generator=gen) < 0.5)[:, 0]
    for i in range(8):
        crop = padded[i, :, oy[i]: oy[i] + 12, ox[i]: ox[i] + 12]
        crop = crop[:, :, ::-1] if flip[i] else crop
        np.testing.assert_allclose(out[i].numpy(), crop, atol=1e-3)
    assert data.x.shape == (8, 3, 12, 12)  # stored unpadded


def test_channel_statistics_match_float64():
    from pruning_core.dynamics.device_data import _channel_stats

    x = torch.as_tensor(np.random.default_rng(0).integers(0, 256, size=(300, 3, 8, 8), dtype=np.uint8))
    mean, std = _channel_stats(x, chunk=64)
    ref = x.double()
    assert mean.dtype == torch.float32
    np.testing.assert_allclose(mean.numpy(), ref.mean((0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), ref.std((0, 2, 3), correction=0).numpy(), rtol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_working_set_estimate_tracks_the_saved_activations(precision):
    from pruning_core.dynamics.models import ACTIVATION_BYTES, WORKING_SET_FACTOR, training_working_bytes

    width, size, batch = 16, 32, 32
    model = ResNet9(10, width=width).to(memory_format=torch.channels_last)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), devices.autocast(torch.device("cpu"), precision):
        model(x)
    measured = sum(saved.values()) / (batch * width * size * size)
    assert measured == pytest.approx(ACTIVATION_BYTES[precision], rel=0.1)
    estimate = training_working_bytes("resnet9", batch_size=batch, width=width, image_size=size, precision=precision)
    assert estimate > WORKING_SET_FACTOR * sum(saved.values())


def test_cache_keys_differ_by_precision(monkeypatch):
    from cache.store import make_key
    from pruning_core.scoring.pipeline import _dynamics_params

    keys = {p: make_key("dynamics-record", "fp", _dynamics_params(DynamicsConfig(device="cpu", precision=p), None))
            for p in ("fp32", "bf16", "fp16")}
    assert len(set(keys.values())) == 3
    for has_bf16, same_as in ((True, "bf16"), (False, "fp32")):  # auto resolves before keying
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda: has_bf16)
        auto = make_key("dynamics-record", "fp", _dynamics_params(DynamicsConfig(device="cpu"), None))
        assert auto == keys[same_as]


def test_executor_needs_follow_the_device_name():
    from pruning_core.runtime.executors import Needs

    assert [Needs.for_device(d).gpus for d in ("auto", "cpu", "mps", "cuda", "cuda:1")] == [None, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("cpus, others_load, cap, threads", [
    (2, 0.0, 2, 2),     # idle: every core
    (2, 0.4, 2, 2),     # a little background work: 1.6 free rounds up
    (2, 1.0, 2, 1),     # one competing process holds a core: never wait at a barrier for it
    (2, 6.0, 2, 1),     # a crowded machine: still one thread
    (16, 4.2, 16, 12),  # the cores left free
    (16, 0.0, 4, 4),    # never above the caller's thread setting (OMP_NUM_THREADS, torch.set_num_threads)
    (1, 0.0, 8, 1),     # never above the CPUs in the affinity
])
def test_threads_follow_the_cores_other_processes_leave_free(cpus, others_load, cap, threads):
    choice = devices.choose_threads(cpus, others_load, cap)
    assert choice.threads == threads
    assert f"{cpus} CPUs, other processes' load {others_load:.1f}" in choice.describe()


def test_the_load_monitor_counts_other_processes_not_this_one(monkeypatch, one_thread):
    """A run busy on 2 threads is no competition for itself; another process's busy core is."""
    clock = {"t": 100.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(devices.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(devices.time, "sleep", lambda s: clock.update(t=clock["t"] + s))
    monkeypatch.setattr(devices, "_affinity_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(devices, "_process_cpu_seconds", lambda: clock["own"])
    monkeypatch.setattr(devices, "affinity_cpus", lambda: 2)
    policy = devices.ThreadPolicy(cap=2, monitor=devices.LoadMonitor())
    assert policy.choice.threads == 2 and policy.choice.others_load == 0.0  # an idle first window
    clock.update(t=110.0, busy=20.0, own=20.0)  # both CPUs busy, all of it this process
    assert policy.check().threads == 2
    clock.update(t=120.0, busy=40.0, own=30.0)  # another process took one CPU for the last 10 s
    assert policy.apply().threads == 1 and torch.get_num_threads() == 1
    clock.update(t=120.2, busy=40.4, own=30.0)  # too short a window to measure: the last reading holds
    assert policy.check().others_load == 1.0


def test_busy_seconds_are_read_for_the_cpus_of_this_process(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 100 5000 50 0 0 0 0 0\ncpu0 300 0 100 2000 50 0 0 0 0 0\n"
                    "cpu1 600 0 0 3000 0 0 0 0 0 0\nintr 1\n")
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0})
    assert devices._affinity_busy_seconds(str(stat)) == pytest.approx(400 / devices.os.sysconf("SC_CLK_TCK"))
