"""`pipeline merge` without axolotl: which run, the bounds of the check, and what a failed merge leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.core import engine, runs
from pipeline.core.errors import UserError
from pipeline.stages import merge


def fake_train_run(root: Path, name: str, status: str = "succeeded", adapter: bool = True,
                   stage: str = "train") -> runs.Run:
    run = runs.Run(root / name)
    run.output_dir.mkdir(parents=True)
    if adapter:
        (run.output_dir / "adapter_config.json").write_text("{}")
        save_file({"w": torch.zeros(2)}, str(run.output_dir / "adapter_model.safetensors"))
    runs.write_json(run.manifest_path, {"run": name, "stage": stage, "status": status, "offline": True})
    (run.path / "config.yaml").write_text("base_model: /nowhere\nadapter: lora\n")
    return run


def test_auto_picks_the_newest_finished_training_run(tmp_path):
    fake_train_run(tmp_path, "20260101-000000-a-train")
    fake_train_run(tmp_path, "20260102-000000-a-train")
    fake_train_run(tmp_path, "20260103-000000-a-train", status="interrupted")
    fake_train_run(tmp_path, "20260104-000000-a-smoke", stage="smoke")
    fake_train_run(tmp_path, "20260105-000000-a-train", adapter=False)
    assert merge.pick(tmp_path, None, auto=True).name == "20260102-000000-a-train"
    assert merge.pick(tmp_path, "20260101-000000-a-train", auto=False).name == "20260101-000000-a-train"


@pytest.mark.parametrize("ref, auto, rule", [
    (None, False, "merge-which"),
    (None, True, "merge-none"),
    ("nope", False, "run-missing"),
    ("20260103-000000-a-train", False, "merge-not-ready"),
])
def test_runs_that_cannot_be_merged_are_usage_errors(tmp_path, ref, auto, rule):
    fake_train_run(tmp_path, "20260103-000000-a-train", status="interrupted")
    with pytest.raises(UserError) as exc:
        merge.pick(tmp_path, ref, auto)
    assert exc.value.findings[0].rule == rule


def encoded_batch(n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.arange(n)[None] % 5
    return [(ids, torch.tensor([[0, 0, 0, 1, 1, 1]]))]


def test_the_float32_bound_is_tight_and_fails_on_a_real_difference():
    torch.manual_seed(0)  # unseeded noise made these tests flaky: it can flip a near-tied top-1
    ref = [torch.randn(1, 6, 5) * 4]
    enc = encoded_batch()
    ok = merge.compare("ref", ref, [ref[0] + 1e-6], enc, "float32")
    assert ok["ok"] and ok["top1_agreement"] == 1.0
    scale = float(ref[0].abs().max())
    bad = merge.compare("ref", ref, [ref[0] + 2e-4 * scale], enc, "float32")  # 2x the bound
    assert not bad["ok"]
    assert bad["tolerance"] == "max |logit diff| <= 0.0001 * max(1, max |logit|)"


def test_the_qlora_behaviour_check_bounds_loss_and_top1_not_logits():
    torch.manual_seed(0)
    ref = [torch.randn(1, 6, 5) * 4]
    enc = encoded_batch()
    noisy = merge.compare("trained", ref, [ref[0] + 0.01 * torch.randn(1, 6, 5)], enc, "float32",
                          behaviour_only=True)
    assert noisy["ok"] and noisy["max_abs_logit_diff"] > 1e-4 * max(1.0, noisy["max_abs_logit"])
    flipped = merge.compare("trained", ref, [-ref[0]], enc, "float32", behaviour_only=True)
    assert not flipped["ok"]


@pytest.mark.parametrize("double_quant", [False, True])
def test_the_merge_nf4_setting_is_recognised_from_the_embeddings(double_quant):
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(256, 64)

        def get_input_embeddings(self) -> torch.nn.Embedding:
            return self.embed

    model = Model()
    probe = merge._round_trip(model.embed.weight.detach(), None, double_quant)
    assert merge.detect_double_quant(model, probe, None) is double_quant
    # the two settings really differ, and both differ from the original (NF4 is lossy)
    other = merge._round_trip(model.embed.weight.detach(), None, not double_quant)
    assert float((other - probe).abs().max()) > 0
    assert float((probe - model.embed.weight.detach()).abs().max()) > 1e-3


@pytest.mark.parametrize("axolotl_exit, status, code", [(137, "failed", 3), (143, "interrupted", 130)])
def test_a_merge_that_dies_mid_write_leaves_no_merged_folder(tmp_path, monkeypatch, capsys, axolotl_exit,
                                                             status, code):
    run = fake_train_run(tmp_path, "20260101-000000-a-train")

    def dies_while_writing(cmd, env, log_path, **kwargs):
        out = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("--output_dir="))) / "merged"
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half a shard")
        return axolotl_exit

    monkeypatch.setattr(engine, "run", dies_while_writing)
    assert merge.main(run.name, auto=False, force=False, runs_dir=tmp_path) == code
    assert not (run.path / "merged").exists()
    assert not list(run.path.glob(".merging-*"))
    assert run.manifest()["merge"]["status"] == status


def test_an_existing_merge_is_kept_without_force(tmp_path, monkeypatch, capsys):
    run = fake_train_run(tmp_path, "20260101-000000-a-train")
    (run.path / "merged").mkdir()
    (run.path / "merged" / "model.safetensors").write_bytes(b"earlier merge")
    monkeypatch.setattr(engine, "run", lambda *a, **k: pytest.fail("axolotl must not run"))
    assert merge.main(None, auto=True, force=False, runs_dir=tmp_path) == 0
    assert (run.path / "merged" / "model.safetensors").read_bytes() == b"earlier merge"
    assert "--force" in capsys.readouterr().err


def test_a_stale_temporary_folder_of_a_dead_merge_is_removed(tmp_path, monkeypatch):
    run = fake_train_run(tmp_path, "20260101-000000-a-train")
    stale = run.path / f"{merge.TMP_PREFIX}{2**22 + 12345}"  # no such pid
    (stale / "merged").mkdir(parents=True)
    monkeypatch.setattr(engine, "run", lambda *a, **k: 1)
    assert merge.main(run.name, auto=False, force=False, runs_dir=tmp_path) == 3
    assert not stale.exists()
    assert json.loads(run.manifest_path.read_text())["merge"]["status"] == "failed"
