"""What the check says axolotl does with a key is what axolotl's own schema does: the keys it renames are
kept under their new name, the keys the check calls ignored are gone from the validated config, and their
values are what applies without them."""

from __future__ import annotations

import logging

import pytest

from pipeline.checks import schema

BASE = {"base_model": "x", "datasets": [{"path": "a.jsonl", "type": "chat_template"}], "micro_batch_size": 1,
        "gradient_accumulation_steps": 1, "learning_rate": 1e-4, "num_epochs": 1}


def validated(cfg: dict) -> dict:
    """The config as axolotl's validate_config returns it (datasets turned into their models first)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    body = dict(cfg)
    body["datasets"] = [schema._dataset_model(cfg, d)(**d) for d in cfg["datasets"]]
    logging.disable(logging.WARNING)
    try:
        return AxolotlInputConfig(**body).model_dump(exclude_none=True)
    finally:
        logging.disable(logging.NOTSET)


def test_fsdp_prefixed_keys_are_renamed_and_the_ignored_ones_dropped() -> None:
    fsdp = {"fsdp_offload_params": True, "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_sharding_strategy": "FULL_SHARD",
            "limit_all_gathers": True, "fsdp_forward_prefetch": False, "backward_prefetch": "BACKWARD_PRE"}
    out = validated({**BASE, "fsdp_version": 2, "fsdp_config": fsdp})["fsdp_config"]
    for key in fsdp:
        name = schema.as_axolotl_reads(("fsdp_config",), key)
        assert (name in out) == (("fsdp_config", name) not in schema.DROPPED_DEFAULTS), key
    assert out["offload_params"] is True and out["state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.parametrize("key", ["message_property_mappings", "roles"])
def test_a_dpo_entry_drops_roles_and_mappings(key: str) -> None:
    entry = {"path": "a.jsonl", "type": "chat_template.default", "field_messages": "conversation",
             key: schema.DROPPED_DEFAULTS[("datasets", key)]}
    out = validated({**BASE, "rl": "dpo", "datasets": [entry]})
    assert key not in out["datasets"][0] and out["datasets"][0]["field_messages"] == "conversation"


def test_a_stepwise_entry_becomes_an_sft_entry_without_its_keys() -> None:
    entry = {"path": "a.jsonl", "type": "stepwise_supervised", "step_separator": "\n", "train_on_last_step_only": False}
    out = validated({**BASE, "datasets": [entry]})
    assert not {"step_separator", "train_on_last_step_only"} & set(out["datasets"][0])


def test_the_defaults_that_apply_are_axolotls_and_the_strategys() -> None:
    """The DPO strategy's own defaults and the stepwise strategy's, read from axolotl's source."""
    import inspect

    from axolotl.prompt_strategies import stepwise_supervised
    from axolotl.prompt_strategies.dpo import chat_template

    source = inspect.getsource(chat_template.default)
    assert '"role": "role"' in source and '"content": "content"' in source
    for role in ("user", "assistant", "system", "tool"):
        assert f'"{role}": ["{role}"]' in source
    signature = inspect.signature(stepwise_supervised.StepwiseSupervisedPromptTokenizingStrategy.__init__)
    assert signature.parameters["step_separator"].default == schema.DROPPED_DEFAULTS[("datasets", "step_separator")]
    assert signature.parameters["train_on_last_step_only"].default is False
