"""The time-budget planner: plans that fit, fixed settings kept, and budgets that really stop a run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pruning_core.runtime import planner
from pruning_core.dynamics import out_of_sample_probs, train_and_record
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.dynamics.crossfit import BudgetSpent
from pruning_core.dynamics.probe import PROXY_PROBE
from pruning_core.runtime.devices import choose_threads
from pruning_core.runtime.planner import RUNGS, Rates, estimate_seconds, plan_dynamics
from cache.store import ResultStore


def synthetic_rates(config, *, num_classes=10, store=None) -> Rates:
    """A machine whose cost grows with pixels x width (what ResNet-9's FLOPs do), 1e6 'units' per second."""
    cost = (config.image_size ** 2) * config.width / 16
    return Rates(train=1e6 / cost, eval=3e6 / cost)


class FakeProbe:
    """The planner's probe on a made-up machine: :func:`synthetic_rates` times ``speed`` (a shared machine: < 1)."""

    version = 0

    def __init__(self) -> None:
        self.calls: list = []
        self.speed = 1.0

    def rates(self, config, num_classes):
        self.calls.append(config)
        rates = synthetic_rates(config)
        return Rates(rates.train * self.speed, rates.eval * self.speed)

    memory = PROXY_PROBE.memory


def machine_at(now: float, others_load: float, cpus: int = 2) -> planner.Machine:
    return planner.Machine(now, cpus, others_load, choose_threads(cpus, others_load, cap=cpus))


@pytest.fixture
def fake_machine(monkeypatch):
    """An idle 2-CPU machine (load and clock faked) and its probe; the probe's calls are recorded."""
    probe = FakeProbe()
    state = {"machine": machine_at(1e9, 0.0)}
    monkeypatch.setattr(planner, "read_machine", lambda dev: state["machine"])
    probe.state = state
    return probe


@pytest.mark.parametrize("budget", [5.0, 30.0, 120.0, 600.0, 5000.0])
def test_plan_is_the_most_capable_rung_that_fits(fake_machine, budget):
    n = 20_000
    plan = plan_dynamics(DynamicsConfig(device="cpu"), n, num_classes=10, probe=fake_machine, budget_s=budget)
    assert plan.estimate_s <= budget or plan.rung == 0
    assert plan.estimate_s == pytest.approx(estimate_seconds(plan.config, n, synthetic_rates(plan.config, num_classes=10)))
    if plan.fits and plan.rung + 1 < len(RUNGS):  # the next rung up would not have fitted
        defaults = DynamicsConfig()
        nxt = {f: RUNGS[plan.rung + 1].get(f, getattr(defaults, f)) for f in planner.PLANNED_FIELDS}
        bigger = DynamicsConfig(device="cpu", **nxt)
        bigger = DynamicsConfig(**{**bigger.__dict__, "batch_size": planner.planned_batch_size(bigger.batch_size, n)})
        assert estimate_seconds(bigger, n, synthetic_rates(bigger, num_classes=10)) > budget


def test_an_epoch_costs_training_only_and_the_run_evaluates_once():
    """The recording run reads its epochs' statistics from the training pass: each epoch adds N training passes and
    no evaluation; the whole set is evaluated once (and each held-out fold once more when cross-fitting)."""
    rates, n = Rates(train=1000.0, eval=4000.0), 8000
    one, three = (estimate_seconds(DynamicsConfig(epochs=e, folds=0), n, rates) for e in (1, 3))
    assert one == pytest.approx(n / 1000 + n / 4000)
    assert three - one == pytest.approx(2 * n / 1000)
    assert estimate_seconds(DynamicsConfig(epochs=1, folds=2, crossfit_share=1.0), n, rates) == pytest.approx(
        2 * n / 1000 + 2 * n / 4000)
    # cleaned cross-fitting: each of the 4 folds trains on the trusted 60 % of the other three folds
    assert estimate_seconds(DynamicsConfig(epochs=1, folds=4, crossfit_share=0.6), n, rates) == pytest.approx(
        (1 + 0.6 * 3) * n / 1000 + 2 * n / 4000)


def test_plans_grow_with_the_budget(fake_machine):
    estimates = [plan_dynamics(DynamicsConfig(device="cpu"), 20_000, num_classes=10, probe=fake_machine, budget_s=b).estimate_s
                 for b in (30.0, 120.0, 600.0, 5000.0)]
    assert estimates == sorted(estimates) and estimates[0] < estimates[-1]


def test_full_size_when_the_budget_allows(fake_machine):
    plan = plan_dynamics(DynamicsConfig(device="cpu"), 1_000, num_classes=10, probe=fake_machine, budget_s=1e9)
    full = DynamicsConfig()
    assert (plan.config.width, plan.config.image_size, plan.config.epochs, plan.config.folds) == (
        full.width, full.image_size, full.epochs, full.folds)


def test_fixed_settings_are_kept(fake_machine):
    config = DynamicsConfig(device="cpu", width=48, epochs=3)
    plan = plan_dynamics(config, 20_000, num_classes=10, probe=fake_machine, budget_s=60.0, fixed=("width", "epochs"))
    assert plan.config.width == 48 and plan.config.epochs == 3
    assert all(c.width == 48 and c.epochs == 3 for c in fake_machine.calls)


def test_over_budget_shrinks_epochs_down_to_a_floor(fake_machine):
    n = 50_000
    rung0 = DynamicsConfig(device="cpu", **{**RUNGS[0], "batch_size": planner.planned_batch_size(256, n)})
    budget = 0.8 * estimate_seconds(rung0, n, synthetic_rates(rung0, num_classes=10))
    plan = plan_dynamics(DynamicsConfig(device="cpu"), n, num_classes=10, probe=fake_machine, budget_s=budget)
    assert plan.fits and planner.MIN_EPOCHS <= plan.config.epochs < rung0.epochs
    tiny = plan_dynamics(DynamicsConfig(device="cpu"), n, num_classes=10, probe=fake_machine, budget_s=budget / 20)
    assert not tiny.fits and tiny.config.epochs == planner.MIN_EPOCHS and "cheapest" in tiny.describe()
    fixed = plan_dynamics(DynamicsConfig(device="cpu", epochs=6), n, num_classes=10, probe=fake_machine, budget_s=budget / 20,
                          fixed=("epochs",))
    assert fixed.config.epochs == 6 and "settings you fixed" in fixed.describe()


def test_batch_size_keeps_a_floor_of_steps_per_epoch():
    for n in (100, 2_395, 50_000):
        bs = planner.planned_batch_size(512, n)
        assert bs <= 512 and (n // bs >= planner.MIN_STEPS_PER_EPOCH or bs == planner.MIN_BATCH_SIZE)


def _tiny_images(n=256, size=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    x = (rng.integers(0, 60, size=(n, size, size, 3)) + 40 * y[:, None, None, None]).astype(np.uint8)
    return x, y


def test_a_budgeted_run_stops_within_its_budget_plus_one_epoch(one_thread):
    x, y = _tiny_images()
    kw = dict(arch="resnet9", seed=0, device="cpu", width=8, batch_size=32, precision="auto", num_classes=4)
    t0 = time.perf_counter()
    train_and_record(x, y, epochs=2, **kw)
    epoch_s = (time.perf_counter() - t0) / 2  # one epoch with its recording pass
    budget = 3 * epoch_s
    t0 = time.perf_counter()
    rec = train_and_record(x, y, epochs=200, deadline=time.monotonic() + budget, **kw)
    elapsed = time.perf_counter() - t0
    assert rec.meta["stopped_by_budget"] and 1 <= rec.n_epochs < 200
    assert rec.prob.shape == (rec.n_epochs, len(y)) and rec.meta["epochs_done"] == rec.n_epochs
    assert elapsed <= budget + 2 * epoch_s + 0.5  # the budget, the epoch that crossed it, model set-up
    # the final logits are those of the last epoch done (copied to the host once, after it)
    from pruning_core.dynamics.trainer import label_stats
    import torch

    final = label_stats(torch.as_tensor(rec.final_logits), torch.as_tensor(y))["prob"].numpy()
    np.testing.assert_allclose(final, rec.prob[-1], rtol=1e-5, atol=1e-6)
    unbudgeted = train_and_record(x, y, epochs=3, **kw)
    assert not unbudgeted.meta["stopped_by_budget"] and unbudgeted.n_epochs == 3


def test_cross_fitting_out_of_budget_keeps_finished_folds_only(tmp_path, one_thread):
    x, y = _tiny_images()
    kw = dict(**DynamicsConfig(device="cpu", width=8, batch_size=32, epochs=2).trainer_options(), num_classes=4,
              folds=4, fold_cache=tmp_path)
    with pytest.raises(BudgetSpent) as err:
        out_of_sample_probs(x, y, deadline=time.monotonic() - 1, **kw)
    assert err.value.folds_done == 0 and not list(tmp_path.glob("fold*.npy"))
    probs = out_of_sample_probs(x, y, deadline=time.monotonic() + 600, **kw)
    assert np.isfinite(probs).all() and len(list(tmp_path.glob("fold*.npy"))) == 4


def test_the_plan_shows_and_records_the_device_decisions(fake_machine, monkeypatch):
    from pruning_core.runtime import devices
    t4 = devices.DeviceFacts("cuda", 0, "Tesla T4", (7, 5), 16 * 10**9, 15 * 10**9, cpus=2, shm_bytes=64 * 2**20)
    monkeypatch.setattr(planner, "device_policy", lambda device, precision="auto": devices.decide(t4, precision))
    imagenet64 = plan_dynamics(DynamicsConfig(device="cpu", image_size=64), 1_281_167, num_classes=1000, probe=fake_machine,
                               budget_s=None)
    assert "fp16 + GradScaler on cuda:0" in imagenet64.describe() and "pinned host memory" in imagenet64.describe()
    recorded = imagenet64.as_dict()
    assert recorded["device_policy"]["facts"]["capability"] == (7, 5)
    assert recorded["memory"]["data_bytes"] == 1_281_167 * 64 * 64 * 3 and not recorded["memory"]["data_on_device"]
    cifar = plan_dynamics(DynamicsConfig(device="cpu"), 50_000, num_classes=10, probe=fake_machine, budget_s=None)
    assert cifar.as_dict()["memory"]["data_on_device"] and "0.14 GiB on the device" in cifar.describe()


DEMO = 2_395  # the demo's samples; its default budget is planner.DEFAULT_BUDGET_S


def test_a_probe_taken_under_load_is_measured_again_when_the_load_falls(fake_machine, tmp_path):
    """Issue 24's target: a probe recorded at load 6 (30x slower) must not keep planning the idle machine's runs."""
    store = ResultStore(tmp_path)
    config = DynamicsConfig(device="cpu")
    idle = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=ResultStore(tmp_path / "idle"))

    fake_machine.state["machine"], fake_machine.speed = machine_at(1e9, 6.0), 1 / 30
    loaded = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    assert loaded.rung < idle.rung and "at load 6.0" in loaded.describe()

    # two minutes later, at load 6 still: the recorded probe is used again (no new measurement)
    fake_machine.state["machine"], fake_machine.speed = machine_at(1e9 + 120, 5.6), 1.0
    calls = len(fake_machine.calls)
    again = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    assert len(fake_machine.calls) == calls and again.config == loaded.config
    assert "2 min ago at load 6.0" in again.describe()

    # later at load 1: measured again by itself, and the idle plan comes back
    fake_machine.state["machine"] = machine_at(1e9 + 240, 1.0)
    later = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    assert len(fake_machine.calls) > calls
    assert later.config == idle.config
    remeasured = planner.Measurement.from_meta(loaded.probe_step.load(store).meta)  # the loaded plan's rung
    assert remeasured.remeasured == "the load changed from 6.0 to 1.0" and remeasured.others_load == 1.0


def test_a_recorded_probe_expires(fake_machine, tmp_path):
    store = ResultStore(tmp_path)
    config = DynamicsConfig(device="cpu")
    plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    calls = len(fake_machine.calls)
    fake_machine.state["machine"] = machine_at(1e9 + planner.PROBE_MAX_AGE_S - 60, 0.0)
    plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    assert len(fake_machine.calls) == calls
    fake_machine.state["machine"] = machine_at(1e9 + planner.PROBE_MAX_AGE_S + 60, 0.0)
    late = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    assert len(fake_machine.calls) > calls and "h old" in late.describe()


def test_a_run_that_disagrees_with_its_probe_makes_the_next_plan_measure_again(fake_machine, tmp_path):
    store = ResultStore(tmp_path)
    config = DynamicsConfig(device="cpu")
    plan = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    after = plan.measurement.measured_at + 30
    close = {"samples_trained": 1_000, "train_seconds": 1_000 / (1.2 * plan.rates.train), "finished_at": after}
    assert planner.check_run_rate(plan, close, store) == {
        "probe_train_rate": round(plan.rates.train, 1), "run_train_rate": round(1.2 * plan.rates.train, 1),
        "ratio": 1.2, "probe_forgotten": False}
    assert plan.probe_step.is_cached(store)
    cached = {**close, "train_seconds": close["train_seconds"] / 30, "finished_at": after - 60}
    assert planner.check_run_rate(plan, cached, store) is None  # a record older than the probe: not this machine
    far = {**cached, "finished_at": after}
    assert planner.check_run_rate(plan, far, store)["probe_forgotten"] and not plan.probe_step.is_cached(store)
    calls = len(fake_machine.calls)
    plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0, store=store)
    assert len(fake_machine.calls) > calls


@pytest.mark.parametrize("n", [DEMO, 50_000])
def test_no_budget_is_left_more_than_a_third_unspent(fake_machine, n):
    budgets = np.geomspace(5, 20_000, 60)
    top = estimate_seconds(DynamicsConfig(device="cpu", batch_size=planner.planned_batch_size(512, n)), n,
                           synthetic_rates(DynamicsConfig()))
    for budget in budgets:
        plan = plan_dynamics(DynamicsConfig(device="cpu"), n, num_classes=10, probe=fake_machine, budget_s=float(budget))
        spent = plan.estimate_s + plan.overhead_s
        assert spent <= budget or plan.rung == 0
        # below the full size, two thirds of the budget are planned, unless the plan stopped at the epoch cap
        if plan.fits and budget < top and plan.config.epochs < planner.MAX_STRETCHED_EPOCHS:
            assert spent >= 2 / 3 * budget, (budget, plan.describe())


def test_the_plan_line_says_its_threads_and_why(fake_machine):
    fake_machine.state["machine"] = machine_at(1e9, 1.0)
    line = plan_dynamics(DynamicsConfig(device="cpu"), DEMO, num_classes=10, probe=fake_machine, budget_s=60.0).describe()
    assert "1 CPU thread (2 CPUs, other processes' load 1.0 leaves 1.0 free)" in line


def test_the_budget_counts_the_time_spent_before_the_run_and_the_decoding(fake_machine):
    config = DynamicsConfig(device="cpu")
    whole = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0)
    late = plan_dynamics(config, DEMO, num_classes=10, probe=fake_machine, budget_s=60.0,
                         started=time.monotonic() - 20, overhead_s=lambda candidate: 10.0)
    assert late.spent_s >= 20 and late.decode_s == 10.0
    assert late.estimate_s + late.overhead_s <= 60.0 and late.estimate_s < whole.estimate_s
    assert "loading, probing and decoding" in late.describe()


def test_a_command_line_budget_counts_from_the_start_of_the_process():
    """What the interpreter and the imports took before the command ran is part of the command's wall time."""
    import subprocess
    import sys

    code = ("import time; time.sleep(1.0); from pruning_core.runtime.planner import process_started; "
            "print(time.monotonic() - process_started())")
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert age >= 1.0


def test_the_rung_order_follows_the_recorded_measurements():
    """Where a rung's detection was measured, a costlier rung (higher in RUNGS) detected at least as well."""
    for manifest, measured in planner.RUNG_EVIDENCE.items():
        rungs = sorted(measured)
        assert rungs and all(0 <= r < len(RUNGS) for r in rungs)
        aurocs = [measured[r] for r in rungs]
        assert aurocs == sorted(aurocs), f"{manifest}: a cheaper rung detects better: {dict(zip(rungs, aurocs))}"


def test_a_stretch_never_plans_more_epochs_than_the_evidence_covers(fake_machine):
    # every budget between the 20-epoch rung and the next one up: stretched, but never past MAX_STRETCHED_EPOCHS
    rungs = [i for i, r in enumerate(planner.RUNGS) if r.get("epochs") == planner.MAX_STRETCHED_EPOCHS]
    for budget in np.geomspace(5, 20_000, 80):
        plan = plan_dynamics(DynamicsConfig(device="cpu"), 50_000, num_classes=10, probe=fake_machine,
                             budget_s=float(budget))
        assert plan.config.epochs <= max(planner.MAX_STRETCHED_EPOCHS, DynamicsConfig().epochs), plan.describe()
        if plan.rung in rungs:
            assert plan.config.epochs == planner.MAX_STRETCHED_EPOCHS


def test_a_budgeted_run_grows_into_the_epochs_its_first_epoch_shows_room_for(one_thread):
    """A probe that read the machine slow costs no budget: after its first epoch the recording run trains as many
    epochs as fit its deadline at that pace (up to ``max_epochs``), and its schedule still ends annealed."""
    from pruning_core.dynamics.trainer import epochs_that_fit, proxy_trainer

    assert epochs_that_fit(100.0, 10.0, planned=4, most=8) == 8
    assert epochs_that_fit(100.0, 20.0, planned=4, most=8) == 5
    assert epochs_that_fit(100.0, 40.0, planned=4, most=8) == 4  # never fewer than planned: the deadline shrinks
    x, y = _tiny_images()
    kw = dict(arch="resnet9", seed=0, device="cpu", width=8, batch_size=32, precision="auto", num_classes=4)
    far = time.monotonic() + 3600
    grown = train_and_record(x, y, epochs=2, deadline=far, max_epochs=5, **kw)
    assert grown.n_epochs == 5 and grown.prob.shape == (5, len(y)) and not grown.meta["stopped_by_budget"]
    assert train_and_record(x, y, epochs=2, deadline=far, **kw).n_epochs == 2  # no max_epochs: as planned
    assert train_and_record(x, y, epochs=2, max_epochs=5, **kw).n_epochs == 2  # no deadline: nothing to fit
    # stretched in warm-up: still ramping up where the 2-epoch schedule had peaked, then annealing over 5 epochs
    with proxy_trainer(x, y, epochs=2, **kw) as t:
        t.train_epoch()
        t.resize_schedule(t.total_steps // 2 * 5)
        assert t.total_steps == 40 and t.opt.param_groups[0]["lr"] < 0.9 * t.lr
        lrs = []
        for _ in range(3):
            t.train_epoch()
            lrs.append(t.opt.param_groups[0]["lr"])
        assert t.lr >= lrs[0] > lrs[1] > lrs[2] > 0 and t.steps_done == 32


def test_only_a_stretched_recording_run_without_cross_fitting_may_grow(fake_machine):
    n, budget = 50_000, 400.0
    config = DynamicsConfig(device="cpu")
    plain = plan_dynamics(config, n, num_classes=10, probe=fake_machine, budget_s=budget)
    grows = plan_dynamics(config, n, num_classes=10, probe=fake_machine, budget_s=budget, grows=True)
    rung_epochs = planner.RUNGS[grows.rung]["epochs"]
    assert plain.config.max_epochs is None and grows.config.epochs == plain.config.epochs
    assert grows.config.max_epochs == min(int(rung_epochs * planner.MAX_EPOCH_STRETCH),
                                          max(rung_epochs, planner.MAX_STRETCHED_EPOCHS)) > grows.config.epochs
    assert f"up to {grows.config.max_epochs} if the first epoch runs faster" in grows.describe()
    for fixed in ({"epochs": 6}, {"folds": 2}):
        kept = plan_dynamics(DynamicsConfig(device="cpu", **fixed), n, num_classes=10, probe=fake_machine,
                             budget_s=budget, fixed=tuple(fixed), grows=True)
        assert kept.config.max_epochs is None, fixed
