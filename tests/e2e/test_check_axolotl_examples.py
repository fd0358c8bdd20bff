"""`pipeline check` on axolotl's own example configs (../shared/corpus/axolotl-examples, 210 of them, kept
outside the project): no traceback, and no finding but the ones classified in docs/check.md. Findings that
depend on this machine (nothing cached, no hub, optional packages not installed) may come and go; every true
problem must still be found. Skipped where the corpus is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import ROOT

from pipeline import cli

CORPUS = ROOT.parent / "shared" / "corpus" / "axolotl-examples"
CONFIGS = sorted(CORPUS.glob("*.y*ml")) if CORPUS.is_dir() else []

#: findings that say what this machine could not look at: no hub, nothing cached (each config's model and
#: hub datasets), so they are allowed on any config
OFFLINE_ONLY = {"model-offline", "data-not-local", "architecture-unknown", "tokenizer-unavailable"}
#: true here, and gone on a machine that has the optional package
ENVIRONMENT = {"axolotl-needs-package", "plugin-import"}
#: every other finding, by rule: the configs it is true of (docs/check.md classifies each against axolotl's code)
TRUE_PROBLEMS = {
    # context_parallel_size > 1 needs ring_flash_attn, not installed here
    "axolotl-needs-package": [
        "alst_llama3-8b-fsdp2-alst.yaml",
        "distributed-parallel_qwen3-8b-fsdp-tp-cp.yaml",
        "nemotron-h_nano-30b-a3b-qlora-cp.yaml",
    ],
    # axolotl 0.19.0's own validate_config rejects these (the same 18, checked against it)
    "axolotl-validation": [
        "archived_falcon_config-7b-qlora.yml",
        "archived_jeopardy-bot_config.yml",
        "archived_mpt-7b_config.yml",
        "archived_pythia-12b_config.yml",
        "archived_redpajama_config-3b.yml",
        "archived_stablelm-2_1.6b_fft.yml",
        "archived_stablelm-2_1.6b_lora.yml",
        "archived_xgen-7b_xgen-7b-8k-qlora.yml",
        "ebft_llama-3b-ebft-strided-fft.yaml",
        "expert_parallel_qwen3_30ba3b_ep_fft_4gpu.yaml",
        "expert_parallel_qwen3_30ba3b_ep_fsdp_fft_4gpu.yaml",
        "expert_parallel_qwen3_30ba3b_ep_lora_4gpu.yaml",
        "llama-3_diffusion_sft-1b.yaml",
        "llama-4_scout-vision-qlora-fsdp2-flex.yaml",
        "mistral-medium-3_5_qlora-text.yml",
        "mistral-medium-3_5_qlora-vision.yml",
        "mistral4_fft-text.yml",
        "mistral4_fft-vision.yml",
    ],
    # trust_remote_code: true, naming what would run (or that nothing needs it)
    "code-will-run": [
        "LiquidAI_lfm2-vl-lora.yaml",
        "archived_cerebras_btlm-ft.yml",
        "archived_dbrx_16bit-lora.yaml",
        "archived_dbrx_8bit-lora.yaml",
        "archived_dbrx_fft-ds-zero3.yaml",
        "archived_falcon_config-7b-lora.yml",
        "archived_falcon_config-7b-qlora.yml",
        "archived_falcon_config-7b.yml",
        "archived_mpt-7b_config.yml",
        "archived_qwen_qlora.yml",
        "archived_qwen_qwen2-moe-lora.yaml",
        "archived_qwen_qwen2-moe-qlora.yaml",
        "archived_replit-3b_config-lora.yml",
        "archived_stablelm-2_1.6b_fft.yml",
        "archived_stablelm-2_1.6b_lora.yml",
        "archived_xgen-7b_xgen-7b-8k-qlora.yml",
        "deepseek-v2_fft-fsdp-16b.yaml",
        "deepseek-v2_qlora-fsdp-2_5.yaml",
        "glm46v_glm-4-6v-flash-ddp.yaml",
        "glm46v_glm-4-6v-flash-qlora.yaml",
        "jamba_qlora.yaml",
        "jamba_qlora_deepspeed.yaml",
        "kimi-linear_kimi-48b-lora.yaml",
        "mimo_mimo-7b-qlora.yaml",
        "mistral_mixtral_mixtral-qlora-fsdp.yml",
        "mistral_mixtral_mixtral_22.yml",
        "smolvlm2_smolvlm2-2B-lora.yaml",
    ],
    # evals_per_epoch with no evaluation data: axolotl never evaluates
    # evals_per_epoch 1 x num_epochs 1 beside a val_set_size: axolotl drops eval_steps 1.0, the held-out split is
    # never evaluated
    "eval-once-dropped": [
        "apertus_apertus-8b-qlora.yaml",
        "arcee_afm-4.5b-qlora.yaml",
        "deepcogito_cogito-v1-preview-qwen-14B-lora.yml",
        "gemma3_gemma-3-4b-qlora.yml",
        "gemma3_gemma-3-4b-vision-qlora.yml",
        "gemma3n_gemma-3n-e2b-vision-audio-qlora.yml",
        "gemma3n_gemma-3n-e2b-vision-qlora.yml",
        "glm45_glm-45-air-qlora.yaml",
        "glm47-flash_lora.yaml",
        "glm47-flash_lora_fsdp.yaml",
        "glm47-flash_qlora.yaml",
        "glm47-flash_qlora_fsdp.yaml",
        "granite4_granite-4.0-tiny-fft.yaml",
        "hunyuan_hunyuan-v1-dense-qlora.yaml",
        "internvl3_5_internvl3_5-8b-qlora.yml",
        "magistral_magistral-small-fsdp-qlora.yaml",
        "magistral_magistral-small-qlora.yaml",
        "magistral_vision_magistral-small-vision-24B-qlora.yml",
        "mimo_mimo-7b-qlora.yaml",
        "ministral3_ministral3-3b-qlora.yaml",
        "ministral3_vision_ministral3-3b-vision-qlora.yml",
        "ministral_ministral-small-qlora.yaml",
        "mistral-medium-3_5_qlora-text.yml",
        "mistral-medium-3_5_qlora-vision.yml",
        "mistral-small_mistral-small-3.1-24B-lora.yml",
        "mistral4_fft-text.yml",
        "mistral4_fft-vision.yml",
        "mistral4_qlora-text.yml",
        "mistral4_qlora-vision.yml",
        "nemotron_nemotron-mini-4b-qlora.yaml",
        "plano_plano-4b-qlora.yaml",
        "qwen3-next_qwen3-next-80b-a3b-qlora.yaml",
        "seed-oss_seed-oss-36b-qlora.yaml",
        "trinity_trinity-nano-preview-qlora.yaml",
        "voxtral_voxtral-mini-audio-qlora.yml",
    ],
    "eval-never-runs": [
        "LiquidAI_lfm2-vl-lora.yaml",
        "alst_llama3-8b-fsdp2-alst.yaml",
        "deepseek-v2_fft-fsdp-16b.yaml",
        "deepseek-v2_qlora-fsdp-2_5.yaml",
        "falcon-h1_falcon-h1-3b-qlora.yaml",
        "falcon-h1_falcon-h1-7b-qlora.yaml",
        "glm4_qlora-32b.yaml",
        "jamba_qlora_fsdp_large.yaml",
        "llama-3-vision_lora-11b.yaml",
        "llama-3_3b-fp8-fsdp2.yaml",
        "llama-3_3b-qat-fsdp2.yaml",
        "llama-3_3b-qat-mxfp4.yaml",
        "llama-3_3b-qat-nvfp4.yaml",
        "llama-3_lora-1b-deduplicate-dpo.yml",
        "llama-3_opentelemetry-qlora.yml",
        "llama-3_qlora-1b-kto.yaml",
        "llama-3_qlora-fsdp-405b.yaml",
        "llama-4_do-no-use-fa2_maverick-qlora-fsdp1.yaml",
        "llama-4_do-no-use-fa2_scout-qlora-fsdp1.yaml",
        "llama-4_do-no-use-fa2_scout-qlora-single-h100.yaml",
        "llama-4_do-no-use-fa2_scout-vision-qlora-fsdp.yaml",
        "llama-4_scout-qlora-flexattn-fsdp2.yaml",
        "llama-4_scout-qlora-single-h100-flex.yaml",
        "llama-4_scout-vision-qlora-fsdp2-flex.yaml",
        "llava_lora-7b.yaml",
        "magistral_think_magistral-small-think-qlora.yaml",
        "mamba_config.yml",
        "ministral3_think_ministral3-3b-think-qlora.yaml",
        "mistral_mps_lora-mps.yml",
        "nemotron-h_120b-a12b-qlora.yaml",
        "nemotron-h_nano-30b-a3b-qlora-cp.yaml",
        "nemotron-h_nano-30b-a3b-qlora.yaml",
        "pixtral_lora-12b.yml",
        "qat_nvfp4_Gemma3-12B_qat.yml",
        "qwen2-vl_lora-7b.yaml",
        "qwen2_5-vl_lora-7b.yaml",
        "qwen2_dpo.yaml",
        "qwen3.5_122b-a10b-moe-qlora-fsdp.yaml",
        "qwen3.5_122b-a10b-moe-qlora.yaml",
        "qwen3.5_27b-fft.yaml",
        "qwen3.5_27b-qlora-fsdp.yaml",
        "qwen3.5_27b-qlora.yaml",
        "qwen3.5_35b-a3b-moe-qlora-fsdp.yaml",
        "qwen3.5_35b-a3b-moe-qlora.yaml",
        "qwen3.5_9b-fft-vision.yaml",
        "qwen3.5_9b-lora-vision.yaml",
        "qwen3_8b-qat-fsdp2.yml",
        "smolvlm2_smolvlm2-2B-lora.yaml",
    ],
    # keys axolotl drops that change nothing: empty ones, and defaults that apply anyway
    "ignored-key": [
        "archived_cerebras_btlm-ft.yml",
        "archived_cerebras_qlora.yml",
        "archived_dbrx_16bit-lora.yaml",
        "archived_dbrx_8bit-lora.yaml",
        "archived_falcon_config-7b-lora.yml",
        "archived_falcon_config-7b-qlora.yml",
        "archived_falcon_config-7b.yml",
        "archived_gptj_qlora.yml",
        "archived_jeopardy-bot_config.yml",
        "archived_mpt-7b_config.yml",
        "archived_openllama-3b_config.yml",
        "archived_openllama-3b_lora.yml",
        "archived_openllama-3b_qlora.yml",
        "archived_redpajama_config-3b.yml",
        "archived_replit-3b_config-lora.yml",
        "archived_xgen-7b_xgen-7b-8k-qlora.yml",
        "deepseek-v2_fft-fsdp-16b.yaml",
        "deepseek-v2_qlora-fsdp-2_5.yaml",
        "eaft_eaft-example.yml",
        "ebft_llama-3b-ebft-strided-fft.yaml",
        "expert_parallel_qwen3_30ba3b_ep_fsdp_fft_4gpu.yaml",
        "glm47-flash_lora_fsdp.yaml",
        "glm47-flash_qlora_fsdp.yaml",
        "jamba_qlora_fsdp_large.yaml",
        "kimi-linear_kimi-48b-lora.yaml",
        "llama-2_qlora-fsdp.yml",
        "llama-3_3b-fp8-fsdp2.yaml",
        "llama-3_3b-qat-fsdp2.yaml",
        "llama-3_instruct-dpo-lora-8b.yml",
        "llama-3_lora-1b-deduplicate-dpo.yml",
        "llama-3_qlora-fsdp-405b.yaml",
        "llama-3_sparse-finetuning.yaml",
        "llama-4_do-no-use-fa2_maverick-qlora-fsdp1.yaml",
        "llama-4_do-no-use-fa2_scout-qlora-fsdp1.yaml",
        "llama-4_do-no-use-fa2_scout-vision-qlora-fsdp.yaml",
        "llama-4_scout-qlora-flexattn-fsdp2.yaml",
        "llama-4_scout-vision-qlora-fsdp2-flex.yaml",
        "mistral_dpo_mistral-dpo-qlora.yml",
        "mistral_mixtral_mixtral-8x22b-qlora-fsdp.yml",
        "mistral_mixtral_mixtral-qlora-fsdp.yml",
        "qat_nvfp4_Gemma3-12B_baseline.yml",
        "qat_nvfp4_Gemma3-12B_qat.yml",
        "qat_nvfp4_Math-Gemma3-12B_baseline.yml",
        "qat_nvfp4_Math-Gemma3-12B_qat.yml",
        "qat_nvfp4_Math-Gemma3-27B_baseline.yml",
        "qat_nvfp4_Math-Gemma3-27B_qat.yml",
        "qat_nvfp4_Math-Qwen2.5-72B_baseline.yml",
        "qat_nvfp4_Math-Qwen2.5-72B_qat.yml",
        "qat_nvfp4_Qwen2.5-72B_baseline.yml",
        "qat_nvfp4_Qwen2.5-72B_qat.yml",
        "qwen2_dpo.yaml",
        "qwen2_prm.yaml",
        "qwen3.5_122b-a10b-moe-qlora-fsdp.yaml",
        "qwen3.5_27b-fft.yaml",
        "qwen3.5_27b-qlora-fsdp.yaml",
        "qwen3.5_35b-a3b-moe-qlora-fsdp.yaml",
        "qwen3_8b-qat-fsdp2.yml",
        "swanlab_dpo-swanlab-completions.yml",
        "swanlab_dpo-swanlab-full-featured.yml",
    ],
    # axolotl's --cloud launcher files
    "not-a-training-config": [
        "cloud_baseten.yaml",
        "cloud_modal.yaml",
    ],
    # the llmcompressor plugin needs the llmcompressor package, not installed here
    "plugin-import": [
        "llama-3_sparse-finetuning.yaml",
    ],
    # gate_proj and up_proj on GLM-4-0414, whose MLP fuses them into one gate_up_proj (transformers' Glm4MLP): peft
    # adapts the others and skips these two silently
    "lora-target-missing": [
        "glm4_qlora-32b.yaml",
    ],
    # sequence_len above the shipped shape's context
    "sequence-len-above-context": [
        "alst_llama3-8b-fsdp2-alst.yaml",
        "archived_tiny-llama_lora-mps.yml",
    ],
    # keys axolotl 0.19.0 drops whose value matters (typos, other trainers' names, settings it no longer reads)
    "unknown-key": [
        "archived_cerebras_btlm-ft.yml",
        "archived_pythia-12b_config.yml",
        "falcon-h1_falcon-h1-1b-qlora-cp.yaml",
        "llama-2_gptq-lora.yml",
        "mistral_mixtral_mixtral-qlora-fsdp.yml",
        "paddleocr-vl_paddleocr-vl-1_6-full-finetune.yaml",
        "qat_nvfp4_Math-Gemma3-27B_baseline.yml",
        "qat_nvfp4_Math-Gemma3-27B_qat.yml",
        "qat_nvfp4_Math-Qwen2.5-72B_baseline.yml",
        "qat_nvfp4_Math-Qwen2.5-72B_qat.yml",
    ],
}


@pytest.mark.skipif(not CONFIGS, reason=f"the corpus of axolotl's examples is not at {CORPUS}")
def test_axolotl_examples_check_without_a_crash_or_a_false_alarm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub.constants

    # nothing this machine happens to hold: an empty working folder, Hugging Face cache and pipeline cache
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert len(CONFIGS) == 210
    code = cli.main(["check", *map(str, CONFIGS), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == report["exit_code"] == 2 and len(report["configs"]) == len(CONFIGS)

    found: dict[str, set[str]] = {}
    for config in report["configs"]:
        name = Path(config["path"]).name
        for f in config["findings"]:
            if f["rule"] not in OFFLINE_ONLY:
                found.setdefault(f["rule"], set()).add(name)
    unexpected = {rule: sorted(names - set(TRUE_PROBLEMS.get(rule, []))) for rule, names in found.items()}
    assert {rule: names for rule, names in unexpected.items() if names} == {}
    missed = {rule: sorted(set(names) - found.get(rule, set())) for rule, names in TRUE_PROBLEMS.items()
              if rule not in ENVIRONMENT}
    assert {rule: names for rule, names in missed.items() if names} == {}
