"""`pipeline.compute: fastest`: the computation chosen for a card from the peak-VRAM estimate, on the
project's real configs and Llama-3.1-8B's shape, for the two cards the project runs on (141 GiB: the H200;
32 GiB: the seed's RTX 5090). What is trained never changes: only COMPUTATION_KEYS move, the global batch
stays, and every choice fits the card by the estimate's own rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT

from pipeline import checks
from pipeline.checks import compute, compute_plan, estimate, shapes
from pipeline.checks.memory import fits
from pipeline.core import config, models, run_start, section

LORA, QLORA = ROOT / "configs" / "lora_style_transfer.yaml", ROOT / "configs" / "qlora_style_transfer.yaml"
BASELINE_LORA = ROOT / "benchmarks" / "configs" / "baseline_lora.yaml"
BASELINE_QLORA = ROOT / "benchmarks" / "configs" / "baseline_qlora.yaml"
H200, RTX5090 = 141.0, 32.0


@pytest.fixture(scope="module")
def llama8b() -> shapes.Shape:
    return shapes.shape(models.architecture_config("meta-llama/Llama-3.1-8B"))


def written(path: Path) -> dict[str, Any]:
    """A config's axolotl settings as the run sees them (without the pipeline: section)."""
    return {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "pipeline"}


def choose(shape: shapes.Shape, path: Path, card: float, bound: float | None = None) -> compute.Choice:
    cfg = written(path)
    return compute.choose(shape, cfg, cfg["adapter"], card, bound_gib=bound, flash_installed=False)


def same_training(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Only computation settings moved; the global batch is the same."""
    moved = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert moved <= compute.COMPUTATION_KEYS, moved
    assert before["micro_batch_size"] * before["gradient_accumulation_steps"] == \
        after["micro_batch_size"] * after["gradient_accumulation_steps"]


@pytest.mark.parametrize("path", [LORA, QLORA])
def test_on_the_h200_the_shipped_configs_stop_recomputing(llama8b, path):
    c = choose(llama8b, path, H200)
    assert c.settings == {"gradient_checkpointing": False}
    assert c.chosen is not None and c.written is not None and fits(c.chosen, H200)
    assert c.chosen.needs_gib > c.written.needs_gib  # the memory the recomputation saved, now used
    same_training(written(path), {**written(path), **c.settings})
    assert "gradient checkpointing off" in c.summary() and "H200" not in c.summary()


def test_the_lora_config_on_a_32_gib_card_recomputes_every_second_layer(llama8b):
    c = choose(llama8b, LORA, RTX5090)
    assert c.settings == {"gradient_checkpointing_kwargs": {"use_reentrant": False, "every_n_layers": 2}}
    assert c.chosen is not None and fits(c.chosen, RTX5090)
    assert c.chosen.needs_gib * (1 + 0.05) <= RTX5090 - 1.6  # the card less its margin max(1.5, 5%)
    off = estimate.peak_vram(llama8b, {**written(LORA), "gradient_checkpointing": False}, "lora", 4096)
    assert not fits(off, RTX5090)  # every layer kept would not fit: that is why half are recomputed
    assert "16 of 32 layers recomputed" in c.summary()


def test_the_qlora_config_on_a_32_gib_card_keeps_every_activation(llama8b):
    assert choose(llama8b, QLORA, RTX5090).settings == {"gradient_checkpointing": False}


@pytest.mark.parametrize("path, card", [(BASELINE_LORA, H200), (BASELINE_QLORA, H200), (BASELINE_LORA, RTX5090)])
def test_axolotl_defaults_get_the_fused_kernels_too(llama8b, path, card):
    c = choose(llama8b, path, card)
    assert c.settings["plugins"] == [compute.LIGER_PLUGIN]
    assert c.settings["liger_fused_linear_cross_entropy"] and c.settings["liger_rms_norm"]
    same_training(written(path), {**written(path), **c.settings})


def test_the_configs_own_peak_bound_is_kept_and_said(llama8b):
    c = choose(llama8b, LORA, H200, bound=20.0)  # a bound under what stopping recomputation needs
    assert c.settings == {}
    assert c.summary().startswith("for a 141 GiB card: nothing faster fits")
    assert "pipeline.bounds.peak_vram_gib 20 GiB" in c.summary()


def test_where_nothing_faster_fits_it_says_so(llama8b):
    c = choose(llama8b, QLORA, 16.0)
    assert c.settings == {}
    assert "nothing faster fits: every layer's forward is recomputed as written" in c.summary()


@pytest.mark.parametrize("extra", [{}, {"sample_packing": False, "sequence_len": 1024}])
def test_with_axolotls_own_weighting_the_micro_batch_is_never_traded_for_accumulation(llama8b, extra):
    cfg = {**written(LORA), **extra}
    c = compute.choose(llama8b, cfg, "lora", H200, flash_installed=False,
                     reach=compute.Reach(weighting="per-micro-batch", sequences=600, exact=True))
    (mb,) = [lever for lever in c.levers if lever.name == "micro_batch"]
    assert not mb.chosen and "weights tokens differently" in mb.why
    assert "micro_batch_size" not in c.settings and "gradient_accumulation_steps" not in c.settings


def test_unpacked_rows_change_the_split_whatever_the_data(llama8b):
    """The unpacked loader keeps an epoch's last short batch, so no sequence count is needed."""
    cfg = {**written(LORA), "sample_packing": False, "sequence_len": 1024}
    c = compute.choose(llama8b, cfg, "lora", H200, flash_installed=False)
    assert c.settings["micro_batch_size"] == 4 and "multipack_real_batches" not in c.settings
    same_training(cfg, {**cfg, **c.settings})


def test_attention_backend(llama8b):
    cfg = {**written(LORA), "sdp_attention": None}
    assert compute.choose(llama8b, cfg, "lora", H200, flash_installed=False).settings["sdp_attention"] is True
    flash = compute.choose(llama8b, written(LORA), "lora", H200, flash_installed=True).settings
    assert (flash["flash_attention"], flash["sdp_attention"]) == (True, False)


def test_without_a_card_nothing_is_chosen(llama8b):
    c = compute.choose(llama8b, written(LORA), "lora", None)
    assert c.settings == {} and "no card to choose for" in c.note


def test_partial_checkpointing_in_the_estimate(llama8b):
    cfg = written(LORA)
    tokens = 4096

    def peak(**extra: Any) -> float:
        return estimate.peak_vram(llama8b, {**cfg, **extra}, "lora", tokens).peak_gib

    every = peak()
    assert peak(gradient_checkpointing_kwargs={"every_n_layers": 1}) == every
    half = peak(gradient_checkpointing_kwargs={"every_n_layers": 2})
    assert every < half < peak(gradient_checkpointing=False)
    assert peak(gradient_checkpointing_kwargs={"every_n_layers": "2"}) == every  # not a whole number: ignored


@pytest.mark.parametrize("text, words", [
    ("pipeline:\n  compute: fast\n", "must be as_written or fastest"),
    ("pipeline:\n  compute_gpu_mem: lots\n", "must be a memory size"),
])
def test_the_settings_are_checked(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text("base_model: pipeline://tiny-llama\n" + text)
    (finding,) = section.validate(config.load(path))
    assert finding.rule == "pipeline-shape" and words in finding.message


def test_a_run_records_the_choice_in_its_config_and_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("pipeline.core.gpus.cuda_answers", lambda: True)  # a GPU run, chosen for 32 GiB
    loaded = checks.with_overrides(config.load(LORA), {
        "base_model": "pipeline://random/llama-3.1-8b", "pipeline.compute": "fastest",
        "pipeline.compute_gpu_mem": "32GiB", "pipeline.bounds.peak_vram_gib": 32})
    resolved = config.resolve(loaded, build_models=False)
    resolved, chosen = compute_plan.plan(resolved)
    run = run_start.start_run("smoke", resolved, tmp_path / "runs", compute=chosen)
    run.lock.release()
    text = (run.path / "config.yaml").read_text()
    assert "# compute: fastest for a 32 GiB card: 16 of 32 layers recomputed" in text
    resolved_cfg = yaml.safe_load(text)
    assert resolved_cfg["gradient_checkpointing_kwargs"] == {"use_reentrant": False, "every_n_layers": 2}
    assert resolved_cfg["learning_rate"] == written(LORA)["learning_rate"]
    record = run.manifest()["compute"]
    assert record["card_gib"] == 32.0 and record["bound_gib"] == 32
    assert record["estimate_chosen"]["peak_gib"] > record["estimate_as_written"]["peak_gib"]


def as_written(path: Path, tmp_path: Path) -> Path:
    """The shipped config without its `compute: fastest` and `compute_gpu_mem` (the settings as written)."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith(("  compute:", "  compute_gpu"))]
    (tmp_path / path.name).write_text("\n".join(lines) + "\n")
    return tmp_path / path.name


def test_as_written_leaves_the_run_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    loaded = checks.with_overrides(config.load(LORA), {"base_model": "pipeline://random/llama-3.1-8b",
                                                       "pipeline.compute": "as_written"})
    resolved, chosen = compute_plan.plan(config.resolve(loaded, build_models=False))
    run = run_start.start_run("smoke", resolved, tmp_path / "runs", compute=chosen)
    run.lock.release()
    assert "compute" not in run.manifest()
    assert not (run.path / "config.yaml").read_text().splitlines()[1].startswith("# compute")


def test_check_shows_the_choice_per_card(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    plain = as_written(LORA, tmp_path)
    report = checks.run(plain, gpu="H200", gpu_mem_gib=H200, overrides={"pipeline.bounds.peak_vram_gib": 140})
    assert report.facts["compute"]["settings"] == {"gradient_checkpointing": False}
    assert not report.facts["compute"]["asked"]
    report = checks.run(plain, gpu="RTX 5090", gpu_mem_gib=RTX5090,
                        overrides={"pipeline.compute": "fastest", "pipeline.bounds.peak_vram_gib": 32})
    assert report.facts["compute"]["asked"]
    assert report.facts["compute"]["settings"]["gradient_checkpointing_kwargs"]["every_n_layers"] == 2
    from pipeline.stages.check import facts_block

    (line,) = [x for x in facts_block(report) if x.startswith("  compute")]
    assert line.startswith("  compute    with pipeline.compute: fastest for RTX 5090 (32.0 GiB): 16 of 32 layers")


def test_a_cpu_run_is_computed_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("pipeline.core.gpus.cuda_answers", lambda: False)
    loaded = checks.with_overrides(config.load(ROOT / "configs" / "tiny_cpu.yaml"), {
        "gradient_checkpointing": True, "pipeline.compute": "fastest", "pipeline.compute_gpu_mem": "32GiB"})
    resolved, chosen = compute_plan.plan(config.resolve(loaded, build_models=False))
    run = run_start.start_run("smoke", resolved, tmp_path / "runs", compute=chosen)
    run.lock.release()
    assert run.manifest()["compute"]["note"] == "no GPU here: a CPU run is computed as written"
    assert yaml.safe_load((run.path / "config.yaml").read_text())["gradient_checkpointing"] is True


BIG_DATA = compute.Reach(sequences=600, exact=True, planned_steps=6)


@pytest.mark.parametrize(("card", "micro"), [(H200, 4), (80.0, 2)])
def test_a_larger_card_takes_a_larger_micro_batch_of_the_same_global_batch(llama8b, card, micro):
    cfg = written(LORA)
    c = compute.choose(llama8b, cfg, "lora", card, flash_installed=False, reach=BIG_DATA)
    assert c.settings["micro_batch_size"] == micro and c.settings["gradient_accumulation_steps"] == 4 // micro
    assert c.settings["multipack_real_batches"] is True and c.settings["gradient_checkpointing"] is False
    same_training(cfg, {**cfg, **c.settings})
    assert c.chosen is not None and fits(c.chosen, card)
    bigger = compute.choose(llama8b, {**cfg, "micro_batch_size": micro * 2 if micro < 4 else 4}, "lora", card,
                          flash_installed=False, reach=BIG_DATA)
    assert bigger.chosen is not None


@pytest.mark.parametrize(("reach", "why"), [
    (compute.Reach(weighting="per-micro-batch", sequences=600, exact=True), "mean per micro batch"),
    (compute.Reach(sequences=600, exact=False, planned_steps=6), "not known exactly"),
    (compute.Reach(sequences=13, exact=True, planned_steps=6), "drops"),
    (None, "not known exactly"),
])
def test_the_split_stays_where_it_would_change_what_trains(llama8b, reach, why):
    cfg = written(LORA)
    c = compute.choose(llama8b, cfg, "lora", H200, flash_installed=False, reach=reach)
    lever = next(v for v in c.levers if v.name == "micro_batch")
    assert not lever.chosen and why in lever.why
    assert "micro_batch_size" not in c.settings


def test_whole_micro_batches_or_a_run_that_ends_before_the_tail_keep_every_sequence():
    assert compute.Reach(sequences=12, exact=True).keeps_every_sequence(True, 4, 4) is None
    assert compute.Reach(sequences=13, exact=True, planned_steps=3).keeps_every_sequence(True, 4, 4) is None
    assert compute.Reach(sequences=13, exact=True, planned_steps=4).keeps_every_sequence(True, 4, 4) is not None
    assert compute.Reach(sequences=None).keeps_every_sequence(False, 4, 4) is None  # unpacked: nothing is dropped


def test_a_run_plans_the_split_from_what_the_check_knows(monkeypatch):
    """The stage hands the check's Reach to the plan: packed sequences counted exactly and a run that ends before
    the epoch's last micro batch take the larger micro batch; the same config without that knowledge keeps its own."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("pipeline.core.gpus.cuda_answers", lambda: True)
    loaded = checks.with_overrides(config.load(LORA), {
        "base_model": "pipeline://random/llama-3.1-8b", "pipeline.compute_gpu_mem": "141GiB",
        "pipeline.bounds.peak_vram_gib": 140})
    resolved = config.resolve(loaded, build_models=False)
    planned, record = compute_plan.plan(resolved, BIG_DATA)
    assert (planned.axolotl["micro_batch_size"], planned.axolotl["gradient_accumulation_steps"]) == (4, 1)
    assert record is not None and record["settings"]["multipack_real_batches"] is True
    unknown, _ = compute_plan.plan(resolved)
    assert (unknown.axolotl["micro_batch_size"], unknown.axolotl["gradient_accumulation_steps"]) == (1, 4)


def test_the_loader_reads_the_reach_from_the_checks_schedule():
    loaded = config.load(LORA)
    reach = checks.reach_of(loaded, {"sequences": 13, "exact": True, "total_steps": 9, "total_exact": True})
    assert reach == compute.Reach(weighting="per-token", sequences=13, exact=True, planned_steps=9)
    assert checks.reach_of(loaded, {}).sequences is None
