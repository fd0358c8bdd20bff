"""pipeline.in_axolotl.loss: which models' losses consume transformers' token count, and what the switch sets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

loss = pytest.importorskip("pipeline.in_axolotl.loss")


class Named:
    def forward(self, input_ids: Any = None, labels: Any = None, num_items_in_batch: Any = None) -> None: ...


class HandsOn:
    def loss_function(self, **kwargs: Any) -> None: ...

    def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> None:
        logits = input_ids
        return self.loss_function(logits=logits, labels=labels, vocab_size=len(str(logits)), **kwargs)


class Swallows:
    def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> None:
        return self.helper(input_ids, extra=kwargs.get("mm_token_type_ids"))

    def helper(self, *args: Any, **kwargs: Any) -> None: ...


class Plain:
    def forward(self, input_ids: Any = None, labels: Any = None) -> None: ...


@pytest.mark.parametrize(("model", "consumes"), [(Named(), True), (HandsOn(), True), (Swallows(), False),
                                                 (Plain(), False), (object(), False)])
def test_only_a_loss_that_takes_the_count_is_switched(model: Any, consumes: bool) -> None:
    assert loss.consumes_item_count(model)[0] is consumes


def test_transformers_llama_hands_the_count_to_its_loss() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=16))
    ok, why = loss.consumes_item_count(model)
    assert ok and "loss_function" in why


def trainer(model: Any, world_size: int) -> Any:
    return SimpleNamespace(model=model, model_accepts_loss_kwargs=False, compute_loss_func=None,
                           accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                           args=SimpleNamespace(world_size=world_size, average_tokens_across_devices=False))


def test_the_switch_counts_tokens_across_ranks_only_with_several() -> None:
    one, many = trainer(HandsOn(), 1), trainer(SimpleNamespace(get_base_model=lambda: HandsOn()), 4)
    assert loss.apply(one)["weighting"] == "per-token" and one.model_accepts_loss_kwargs
    assert one.args.average_tokens_across_devices is False
    record = loss.apply(many)
    assert (record["weighting"], record["world_size"]) == ("per-token", 4)
    assert many.model_accepts_loss_kwargs and many.args.average_tokens_across_devices is True


def test_a_model_that_ignores_the_count_keeps_axolotls_weighting() -> None:
    t = trainer(Swallows(), 2)
    record = loss.apply(t)
    assert record["weighting"] == "per-micro-batch" and "does not hand them" in record["why"]
    assert t.model_accepts_loss_kwargs is False and t.args.average_tokens_across_devices is False


def test_ligers_fused_cross_entropy_forward_hands_the_count_on() -> None:
    llama = pytest.importorskip("liger_kernel.transformers.model.llama")
    model = SimpleNamespace(forward=llama.lce_forward)
    assert loss.consumes_item_count(model)[0]
