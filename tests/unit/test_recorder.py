"""The metrics recorder, driven as the HF trainer drives it, and the summary computed from its file."""

from types import SimpleNamespace

import pytest

from pipeline.core import runs, summary
from pipeline.in_axolotl.recorder import MetricsRecorder, _Recorder


class FakeParam:
    def __init__(self, n, trainable):
        self._n, self.requires_grad = n, trainable

    def numel(self):
        return self._n


def drive(path, steps, step_tokens=100):
    rec = _Recorder(path, trainable=10, total=100)
    state = SimpleNamespace(global_step=0, max_steps=len(steps), epoch=0.0)
    rec.on_train_begin(None, state, None)
    total = 0
    for i, loss in enumerate(steps, start=1):
        rec.on_step_begin(None, state, None)
        state.global_step = i
        rec.on_step_end(None, state, None)
        total += step_tokens
        rec.on_log(None, state, None, logs={"loss": loss, "learning_rate": 0.1, "grad_norm": 1.0,
                                            "tokens/total": total, "tokens/trainable": total // 2})
    rec.on_log(None, state, None, logs={"eval_loss": 1.5, "eval_runtime": 0.1})
    rec.on_log(None, state, None, logs={"train_runtime": 3.0, "train_loss": 2.0})
    rec.on_train_end(None, state, None)
    return rec


def test_recorder_writes_one_record_per_logged_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    drive(path, [3.0, 2.5, 2.0])
    records = runs.read_jsonl(path)
    kinds = [r["kind"] for r in records]
    assert kinds == ["start", "train", "train", "train", "eval", "summary", "end"]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert [r["loss"] for r in train] == [3.0, 2.5, 2.0]
    assert all(r["step_time_s"] is not None and r["step_time_s"] >= 0 for r in train)
    assert all(r["peak_rss_gib"] > 0.01 for r in train)  # a real process reading, not a placeholder
    assert records[0]["trainable_params"] == 10


def test_a_node_s_other_processes_write_nothing_its_first_writes_steps_and_peaks(tmp_path, monkeypatch):
    # the second process of a node: its peak reaches the file through the gather (one process here: none)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    path = tmp_path / "metrics.jsonl"
    drive(path, [3.0, 2.0])
    assert not path.exists() or runs.read_jsonl(path) == []
    # the first process of node 1 (global rank 1): its node's file gets the steps and the peaks it gathered
    monkeypatch.setenv("LOCAL_RANK", "0")
    drive(path, [3.0, 2.0])
    records = runs.read_jsonl(path)
    assert [r["kind"] for r in records] == ["start", "train", "train", "eval", "summary", "end"]
    assert records[-1]["rank"] == 1 and records[-1]["host"]


def test_plugin_counts_trainable_parameters_and_needs_the_env(monkeypatch, tmp_path):
    model = SimpleNamespace(parameters=lambda: [FakeParam(30, True), FakeParam(70, False)])
    monkeypatch.delenv("PIPELINE_METRICS_FILE", raising=False)
    assert MetricsRecorder().add_callbacks_pre_trainer({}, model) == []
    monkeypatch.setenv("PIPELINE_METRICS_FILE", str(tmp_path / "m.jsonl"))
    (cb,) = MetricsRecorder().add_callbacks_pre_trainer({}, model)
    assert (cb.trainable, cb.total) == (30, 100)


def test_summary_throughput_leaves_out_the_first_step():
    records = [
        {"kind": "start", "trainable_params": 5},
        {"kind": "train", "step": 1, "loss": 3.0, "tokens_total": 1000, "tokens_trainable": 400, "step_time_s": 10.0},
        {"kind": "train", "step": 2, "loss": 2.0, "tokens_total": 2000, "tokens_trainable": 800, "step_time_s": 1.0},
        {"kind": "train", "step": 3, "loss": 1.0, "tokens_total": 3000, "tokens_trainable": 1200, "step_time_s": 1.0},
        {"kind": "end", "rank": 0, "peak_vram_allocated_gib": 5.0, "peak_vram_reserved_gib": 6.0, "peak_rss_gib": 1.0},
        {"kind": "end", "rank": 1, "peak_vram_allocated_gib": 7.0, "peak_vram_reserved_gib": 8.0, "peak_rss_gib": 1.0},
    ]
    s = summary.summarize(records)
    assert s["throughput_tok_s"] == pytest.approx(2000 / 2.0)
    assert s["trainable_tok_s"] == pytest.approx(800 / 2.0)
    assert (s["first_loss"], s["final_loss"], s["steps"]) == (3.0, 1.0, 3)
    assert s["peak_vram_allocated_gib"] == 7.0  # the largest rank's peak
    assert s["per_rank_peak_vram_gib"] == {"0": 5.0, "1": 7.0}
    assert summary.used_gpu(s)


def test_human_count():
    assert summary.human_count(167_772_160) == "168M"
    assert summary.human_count(18_688) == "18.7K"
    assert summary.human_count(None) == "-"


def test_the_heap_is_frozen_only_when_allowed(monkeypatch):
    import gc

    from pipeline.in_axolotl import recorder as metrics

    for value, frozen in (("0", False), ("1", True)):
        monkeypatch.setenv("PIPELINE_GC_FREEZE", value)
        before = gc.get_freeze_count()
        try:
            metrics._freeze_heap()
            assert (gc.get_freeze_count() > before) is frozen
        finally:
            gc.unfreeze()  # this test process's heap goes back to the collector


def test_the_settings_axolotl_resolved_are_written_before_the_model_loads(monkeypatch, tmp_path):
    """What the start-up matrix reads against a crash: the per-architecture switches as axolotl's process
    settled them (its cfg is a dict-like DictDefault there; any key it lacks is None)."""
    monkeypatch.setenv("PIPELINE_METRICS_FILE", str(tmp_path / "metrics.jsonl"))
    monkeypatch.delenv("RANK", raising=False)
    cfg = {"lora_qkv_kernel": True, "plugins": ["axolotl.integrations.liger.LigerPlugin"], "sample_packing": True,
           "attn_implementation": "sdpa", "adapter": "lora"}
    MetricsRecorder().pre_model_load(cfg)
    import json

    settled = json.loads((tmp_path / "axolotl-settings.json").read_text())
    assert settled["lora_qkv_kernel"] is True and settled["lora_o_kernel"] is None
    assert settled["attn_implementation"] == "sdpa" and settled["plugins"] == cfg["plugins"]
