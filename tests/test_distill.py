"""MDW distillation: trajectory matching, learned correspondences, the cached set, the CLI's resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cache.store import ResultStore
from pruning_core.distill.export import MANIFEST_NAME, export_distilled, read_distilled
from pruning_core.distill.job import (DistillInputs, distill_dataset, distill_step, expert_trajectories,
                                      starting_state)
from pruning_core.distill.mdw import (MDWConfig, TrajectoryMatcher, correspondence_targets, coverage_start,
                                      distilled_pairs, expert_correspondence, expert_features, given_pairing_mix,
                                      initial_state, real_log_step, train_expert)
from pruning_core.export.manifest import DISTILLED, Manifest

TINY = dict(expert_epochs=3, expert_batch=16, syn_steps=2, expert_span=1, max_start_epoch=2, syn_batch=8,
            validation_steps=20)


def diagonal(k: int, confidence: float = 0.9) -> np.ndarray:
    """Correspondence logits holding ``confidence`` of each row's mass on its own text."""
    return (np.log(confidence * (k - 1) / (1 - confidence)) * np.eye(k)).astype(np.float32)


def paired_data(n: int = 32, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images whose colour says their class, texts whose direction says it: matched pairs a student can learn."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % classes
    colours = rng.normal(size=(classes, 3, 1, 1)) * 1.5
    images = colours[label] + 0.3 * rng.normal(size=(n, 3, 32, 32))
    directions = rng.normal(size=(classes, 8))
    texts = directions[label] + 0.1 * rng.normal(size=(n, 8))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    return torch.tensor(images, dtype=torch.float32), torch.tensor(texts, dtype=torch.float32), label


def tiny_inputs(n: int = 32) -> DistillInputs:
    images, texts, label = paired_data(n)
    return DistillInputs(images=images, texts=texts, alignment=np.ones(n, dtype=np.float32),
                         captions=np.array([f"class {c}" for c in label]), rows=np.arange(n),
                         fingerprint="tiny-paired", identity={"model": "none"})


def test_one_matching_step_reduces_its_loss(one_thread):
    images, texts, _ = paired_data()
    config = MDWConfig(pairs=8, experts=1, **TINY)
    trajectories = train_expert(images, texts, None, config, seed=0)[None]
    matcher = TrajectoryMatcher(config, trajectories,
                                initial_state(images.numpy(), texts.numpy(), np.arange(0, 32, 4), diagonal(8)))
    draw = matcher.draw()
    before = float(matcher.matching_loss(*draw).detach())
    reported = matcher.step(draw)
    after = float(matcher.matching_loss(*draw).detach())
    assert reported == pytest.approx(before, rel=1e-5)
    assert after < before - 1e-4


def test_correspondence_moves_off_the_identity_when_pairs_are_shuffled(one_thread):
    images, texts, label = paired_data()
    config = MDWConfig(pairs=8, experts=1, seed=3, lr_correspondence=0.2, **TINY)
    trajectories = train_expert(images, texts, None, config, seed=0)[None]
    # Texts rolled by one class: every initial pair is mismatched; its true partners sit off the diagonal.
    shuffled = texts[torch.from_numpy((np.arange(len(texts)) + 1) % len(texts))]
    state = initial_state(images.numpy(), shuffled.numpy(), np.sort(np.random.default_rng(3).choice(32, 8, replace=False)),
                          diagonal(8))
    image_class = label[state.source_index]
    text_class = label[(state.source_index + 1) % len(texts)]
    true_partner = image_class[:, None] == text_class[None, :]
    assert not true_partner.diagonal().any()
    start = correspondence_targets(torch.from_numpy(state.correspondence.copy())).numpy()
    TrajectoryMatcher(config, trajectories, state).fit(25)
    joint = correspondence_targets(torch.from_numpy(state.correspondence)).numpy()
    rows, rows_start = joint / joint.sum(1, keepdims=True), start / start.sum(1, keepdims=True)
    assert rows.diagonal().mean() < rows_start.diagonal().mean() - 0.05
    assert rows[true_partner].mean() > rows[~true_partner & ~np.eye(8, dtype=bool)].mean()


def test_distilled_set_reloads_bit_identically_from_the_cache(tmp_path, one_thread):
    inputs = tiny_inputs()
    config = MDWConfig(pairs=6, experts=1, iterations=4, **{**TINY, "validation_pairs": 0})
    store = ResultStore(tmp_path / "cache")
    first = distill_dataset(inputs, config, store, budget_s=3600)
    assert first.meta["iterations"] == 4 and distill_step(inputs, config, 3600).is_cached(store)
    again = distill_dataset(inputs, config, ResultStore(tmp_path / "cache"), budget_s=3600)
    # The same iterations replayed outside the job give the same set, bit for bit.
    trajectories = expert_trajectories(inputs, config, store)
    state = starting_state(inputs, trajectories, config)
    TrajectoryMatcher(config, trajectories, state).fit(4)
    for name in ("images", "texts", "correspondence"):
        assert np.array_equal(getattr(again.state, name), getattr(state, name)), name
        assert np.array_equal(getattr(again.state, name), getattr(first.state, name)), name
    assert again.state.log_lr == state.log_lr and again.state.losses == state.losses


def test_the_experts_correspondence_finds_true_partners_and_the_start_covers_every_class_with_matched_pairs(
        one_thread):
    images, texts, label = paired_data(n=64)
    config = MDWConfig(pairs=8, experts=2, **{**TINY, "expert_epochs": 8})
    trajectories = np.stack([train_expert(images, texts, None, config, seed=s) for s in range(2)])
    # Texts rolled by one class: every pair is mismatched and its true partners sit off the diagonal.
    index = np.arange(0, 64, 8) + np.arange(8) % 4
    shuffled = texts[torch.from_numpy((index + 1) % 64)]
    logits = expert_correspondence(*expert_features(trajectories, images[index], shuffled))
    joint = correspondence_targets(torch.from_numpy(logits)).numpy()
    rows = joint / joint.sum(axis=1, keepdims=True)
    true_partner = label[index][:, None] == label[(index + 1) % 64][None, :]
    assert not true_partner.diagonal().any()
    assert rows[true_partner].mean() > 4 * rows[~true_partner].mean()
    # The start: one medoid per cluster of the experts' image features, never a pair the alignment calls mismatched.
    weights = np.ones(64, dtype=np.float32)
    weights[label == 0] = 0.0
    weights[np.flatnonzero(label == 0)[0]] = 1.0  # one matched pair of class 0 left
    start = coverage_start(expert_features(trajectories, images, texts)[0], weights, k=4, seed=0)
    assert sorted(label[start]) == [0, 1, 2, 3] and (weights[start] == 1.0).all()


def test_the_given_pairing_share_moves_exactly_that_much_of_the_experts_mass_onto_the_diagonal():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(5, 5)).astype(np.float32)
    experts = correspondence_targets(torch.from_numpy(logits)).numpy()
    for share in (0.0, 0.3, 1.0):
        joint = correspondence_targets(torch.from_numpy(given_pairing_mix(logits, share))).numpy()
        assert np.allclose(joint, share * np.eye(5) / 5 + (1 - share) * experts, atol=1e-6), share
    assert np.allclose(correspondence_targets(torch.from_numpy(given_pairing_mix(logits, 0.0))).numpy(), experts)
    with pytest.raises(ValueError, match="share 1.5"):
        given_pairing_mix(logits, 1.5)


def test_the_correspondence_off_ablation_starts_from_the_medoids_whether_their_pairs_match_or_not(one_thread):
    images, texts, label = paired_data(n=64)
    config = MDWConfig(pairs=4, experts=2, **{**TINY, "expert_epochs": 8})
    trajectories = np.stack([train_expert(images, texts, None, config, seed=s) for s in range(2)])
    mismatched = (label == 0) & (np.arange(64) > 0)  # every pair of class 0 but the first reads as mismatched
    inputs = DistillInputs(images=images, texts=texts, alignment=np.where(mismatched, -1.0, 1.0).astype(np.float32),
                           captions=np.array([f"class {c}" for c in label]), rows=np.arange(64),
                           fingerprint="tiny-mismatched", identity={"model": "none"})
    full = starting_state(inputs, trajectories, config).source_index
    ablation = starting_state(inputs, trajectories, replace(config, learn_correspondence=False)).source_index
    assert not mismatched[full].any() and sorted(label[full]) == [0, 1, 2, 3]
    assert mismatched[ablation].any() and sorted(label[ablation]) == [0, 1, 2, 3]
    assert np.array_equal(ablation, coverage_start(expert_features(trajectories, images, texts)[0], None, k=4, seed=0))


def test_validation_keeps_whichever_of_the_start_and_the_matched_set_trains_better_students(tmp_path, one_thread):
    inputs = tiny_inputs()
    # A step a hundredth of the real pairs' leaves the student near its random start: the start is kept at 2×.
    config = MDWConfig(pairs=6, experts=1, iterations=3, **TINY, start_step_factors=(0.01, 2.0),
                       given_pairing_shares=(0.0, 0.5))
    store = ResultStore(tmp_path / "cache")
    distilled = distill_dataset(inputs, config, store, budget_s=3600)
    validation = distilled.meta["validation"]
    assert validation["pairs"] == 32 - 6 and 0 <= validation["start"] <= 1 and 0 <= validation["matched"] <= 1
    kept = "matched" if validation["matched"] > validation["start"] else "start"
    assert distilled.meta["kept"] == kept and distilled.meta["iterations"] == 3
    assert distilled.meta["plan"]["iterations_after_start_validation"] == 3  # the cap, well within an hour
    # The start is judged at every step size it may keep, and kept at the best one.
    by_factor = validation["start_by_step_factor"]
    assert list(by_factor) == ["0.01", "2"]
    assert validation["start_step_factor"] == 2.0 and by_factor["0.01"] < by_factor["2"]
    # Then every further given-pairing share at that step, and the start kept at the best of them.
    by_share = validation["start_by_pairing_share"]
    assert list(by_share) == ["0", "0.5"] and by_share["0"] == by_factor["2"]
    # On these clean pairs half the mass on the given pairing teaches better than the experts' mass alone.
    assert validation["start_pairing_share"] == 0.5 and by_share["0.5"] > by_share["0"]
    assert validation["start"] == max(by_share.values()) == by_share[f"{validation['start_pairing_share']:g}"]
    # Matching starts from the validated start, so whichever is kept descends from it.
    trajectories = expert_trajectories(inputs, config, store)
    expected = starting_state(inputs, trajectories, config, share=validation["start_pairing_share"])
    expected.log_lr = real_log_step(validation["start_step_factor"])
    if kept == "matched":
        TrajectoryMatcher(config, trajectories, expected).fit(3)
    for name in ("images", "texts", "correspondence", "log_lr"):
        assert np.array_equal(getattr(distilled.state, name), getattr(expected, name)), name


def test_the_distilled_export_is_a_manifest_that_round_trips_and_reloads_the_set_bit_identically(tmp_path, one_thread):
    inputs = tiny_inputs()
    store = ResultStore(tmp_path / "cache")
    distilled = distill_dataset(inputs, MDWConfig(pairs=6, experts=1, iterations=3, **TINY), store, budget_s=3600)
    written = export_distilled(distilled, inputs, tmp_path / "out", "tiny")
    text = (tmp_path / "out" / MANIFEST_NAME).read_text()
    back = Manifest.from_json(text)
    assert back == written and back.kind == DISTILLED and back.to_json() == text
    record = back.distilled
    assert record.dataset == {"name": "tiny", "fingerprint": "tiny-paired"} and back.dataset_fingerprint == "tiny-paired"
    assert (record.pairs, record.iterations, record.settings["iterations"]) == (6, 3, 3)
    assert record.settings["budget_s"] == 3600 and record.clip == {"model": "none"}
    assert {"images/0005.png", "images.npy", "texts.npy", "correspondence_logits.npy"} <= set(record.files)
    reloaded = read_distilled(tmp_path / "out")
    for name in ("images", "texts", "correspondence", "source_index"):
        got, want = getattr(reloaded.state, name), np.asarray(getattr(distilled.state, name))
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert reloaded.state.log_lr == distilled.state.log_lr and reloaded.state.losses == distilled.state.losses
    assert reloaded.state.iteration == distilled.state.iteration and reloaded.key == distilled.key
    assert reloaded.meta["params"] == distilled.meta["params"]
    # What a student trains on is the same too: pixels, texts, targets, weights and step.
    ours, theirs = (distilled_pairs(d.state, learn_correspondence=d.learn_correspondence) for d in (reloaded, distilled))
    assert ours.lr == theirs.lr
    for name in ("images", "texts", "targets", "weights"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


def test_a_changed_export_file_is_refused_and_a_distilled_manifest_is_not_replayed_as_a_selection(
        tmp_path, capsys, one_thread):
    from pruning_core import cli

    inputs = tiny_inputs()
    distilled = distill_dataset(inputs, MDWConfig(pairs=6, experts=1, iterations=2, **TINY),
                                ResultStore(tmp_path / "cache"), budget_s=3600)
    export_distilled(distilled, inputs, tmp_path / "out", "tiny")
    texts = np.load(tmp_path / "out" / "texts.npy")
    texts[0, 0] += 1.0
    np.save(tmp_path / "out" / "texts.npy", texts)
    with pytest.raises(ValueError, match=r"texts\.npy: its bytes differ from the manifest's SHA-256"):
        read_distilled(tmp_path / "out" / MANIFEST_NAME)
    assert cli.main(["select", "--replay", str(tmp_path / "out" / MANIFEST_NAME),
                     "--out", str(tmp_path / "kept.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and MANIFEST_NAME in err and "cannot replay the manifest of a distilled set (6" in err
    assert not (tmp_path / "kept.csv").exists()


def test_the_plan_reserves_both_validations_and_refuses_a_budget_that_cannot_hold_them(tmp_path, one_thread):
    from pruning_core.distill.job import plan_distillation

    inputs = tiny_inputs()
    config = MDWConfig(pairs=6, experts=1, iterations=3, **TINY, start_step_factors=(1.0, 2.0),
                       given_pairing_shares=(0.5, 0.0))
    plan = plan_distillation(inputs, config, ResultStore(tmp_path / "cache"), budget_s=3600, left_s=3600)
    # Three versions of the start (two steps, one further share) and the matched set, two students each.
    assert plan.start_validation_s == pytest.approx(3 * plan.matched_validation_s) and plan.matched_validation_s > 0
    assert plan.iterations == 3 and "validation of the start" in plan.line() and "of the matched set" in plan.line()
    assert plan.line().index("validation of the start") < plan.line().index("matching iterations")
    # A quarter of what the experts and validations alone take (probes differ between calls, not fourfold).
    too_small = (plan.expert_s + plan.start_validation_s + plan.matched_validation_s) / 4
    with pytest.raises(ValueError, match=r"--budget 9: too small for this distillation \(budget 9 s: experts"):
        plan_distillation(inputs, config, ResultStore(tmp_path / "cache"), budget_s=9, left_s=too_small)
    unvalidated = plan_distillation(inputs, replace(config, validation_pairs=0), ResultStore(tmp_path / "cache"),
                                    budget_s=3600, left_s=3600)
    assert unvalidated.start_validation_s == unvalidated.matched_validation_s == 0
    assert "validation" not in unvalidated.line()


def write_captioned_set(folder, n: int = 24):
    images, _, label = paired_data(n)
    rgb = np.clip(images.numpy().transpose(0, 2, 3, 1) * 60 + 128, 0, 255).astype(np.uint8)
    (folder / "img").mkdir(parents=True)
    paths = []
    for i, img in enumerate(rgb):
        paths.append(f"img/{i:03d}.png")
        Image.fromarray(img).save(folder / paths[-1])
    names = np.array(["circle", "square", "star", "ring"])
    captions = [f"a {c} on a plain background" for c in names[label]]
    pd.DataFrame({"path": paths, "label": names[label], "caption": captions}).to_csv(folder / "pairs.csv", index=False)
    return folder / "pairs.csv"


def test_cli_distill_resumes_after_an_interrupt(tmp_path, monkeypatch, capsys, one_thread):
    from pruning_core import cli
    from pruning_core.demo.tiny_clip import create_tiny_clip, save_checkpoint
    from pruning_core.runtime.progress import Progress

    manifest = write_captioned_set(tmp_path / "data")
    checkpoint = save_checkpoint(create_tiny_clip(0), tmp_path / "clip.safetensors")
    argv = ["--cache-dir", str(tmp_path / "cache"), "distill", str(manifest), "--pairs", "4", "--budget", "3600",
            "--out", str(tmp_path / "out"), "--experts", "1", "--expert-epochs", "8", "--iterations", "9",
            "--clip-model", "prunescope-tiny", "--clip-pretrained", str(checkpoint)]
    seen: list[Progress] = []

    class CtrlC:
        """Records every report; presses Ctrl-C at matching iteration 7."""

        def __call__(self, p: Progress) -> None:
            seen.append(p)
            if p.stage == "distilling" and p.done == 7 and not resumed:
                raise KeyboardInterrupt

    resumed = False
    monkeypatch.setattr(cli, "TqdmProgress", CtrlC)
    assert cli.main(argv) == 130
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
    stages = [p.stage for p in seen]
    assert stages.index("validating the start") < stages.index("distilling")  # matching starts from the validated start
    # ... and is planned again at the pace the start's students ran at.
    replanned = [p.message for p in seen if p.stage == "distillation plan" and "students ran at" in p.message]
    assert len(replanned) == 1 and "~9 matching iterations in all" in replanned[0]
    resumed = True
    seen.clear()
    assert cli.main(argv) == 0
    plan = [p.message for p in seen if p.stage == "distillation plan"]
    assert plan and plan[0].endswith("resuming at matching iteration 7")
    assert [p.done for p in seen if p.stage == "distilling"] == [8, 9]
    # The start was validated before the interrupt; the resumed run rebuilds it from the saved figures.
    assert not [p for p in seen if p.stage == "validating the start"]
    assert [p.stage for p in seen if p.stage.startswith("validating")] == ["validating the matched set"]
    record = Manifest.read(tmp_path / "out" / MANIFEST_NAME).distilled
    assert record.iterations == 9 and record.pairs == 4 and record.settings["budget_s"] == 3600
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4
    said = capsys.readouterr().out
    assert "into K = 4: 9 matching iterations of at most 9 (reached its iteration cap" in said
    assert "read from the cache" not in said and "Not compared with pruning here" in said
    assert cli.main(argv) == 0  # again: the same set, from the cache, and the output says so
    assert "into K = 4: 9 matching iterations" in (said := capsys.readouterr().out) and "read from the cache" in said


def test_prune_or_distil_trains_every_option_and_cleanest_skips_misaligned_pairs(tmp_path, one_thread):
    from pruning_core.clip_scores import SCORE_INFOS
    from pruning_core.distill.compare import CompareConfig, cleanest_rows, compare_options, summarise
    from pruning_core.scoring.score_table import ScoreTable

    inputs = tiny_inputs()
    n = len(inputs.images)
    alignment = np.linspace(0.9, 0.5, n)
    alignment[[3, 11]] = -0.5  # two mismatched pairs
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": inputs.captions,
                          "clip.caption_alignment": alignment, "clip.diversity": np.full(n, 0.5)})
    names = ("clip.caption_alignment", "clip.diversity")
    table = ScoreTable(frame, {c: SCORE_INFOS[c] for c in names})
    cleanest = cleanest_rows(table, inputs, 6)
    assert sorted(cleanest) == [0, 1, 2, 4, 5, 6]
    store = ResultStore(tmp_path / "cache")
    distilled = distill_dataset(inputs, MDWConfig(pairs=6, experts=1, iterations=2, **TINY), store, budget_s=3600)
    results = compare_options(inputs, inputs, table, [("distilled", distilled)], store,
                              config=CompareConfig(seeds=(0, 1), steps=3, batch_size=8))
    summary = summarise(results)
    assert set(summary["option"]) == {"distilled", "random", "cleanest", "all"}
    assert summary.set_index("option").loc["all", "size"] == n and (summary["runs"] == 2).all()
    assert results[["i2t@1", "t2i@5"]].apply(lambda c: c.between(0, 1)).all().all()


def test_paired_margins_verdict_is_a_t_test_that_counts_the_seeds():
    """The same difference, three standard errors above zero, is a win with ten seeds and noise with three."""
    from pruning_core.distill.compare import paired_margins

    def margins(differences):
        rows = [{"option": option, "size": 100, "seed": seed, "i2t@1": value}
                for seed, d in enumerate(differences) for option, value in (("distilled", 0.1 + d), ("random", 0.1))]
        return paired_margins(pd.DataFrame(rows), "i2t@1", baselines=("random",)).iloc[0]

    def three_standard_errors_up(n):
        spread = np.random.default_rng(n).normal(size=n)
        spread = (spread - spread.mean()) / spread.std(ddof=1)  # mean 0, sd 1, so SE = 1 / sqrt(n)
        return 0.01 * (spread + 3.0 / np.sqrt(n))

    few, many = margins(three_standard_errors_up(3)), margins(three_standard_errors_up(10))
    assert few["difference"] / few["se"] == pytest.approx(3.0) and many["difference"] / many["se"] == pytest.approx(3.0)
    assert few["verdict"] == "within"  # t(0.975, 2) = 4.30 > 3
    assert many["verdict"] == "above"  # t(0.975, 9) = 2.26 < 3
    assert margins(-three_standard_errors_up(10))["verdict"] == "below"
