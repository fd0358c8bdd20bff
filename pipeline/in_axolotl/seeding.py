"""An axolotl plugin that seeds torch right before the adapter is created.

Axolotl seeds the trainer, but the LoRA matrices are initialised earlier, while the model loads, from
whatever state torch's generator is in by then. Two runs of one config then start from different
adapters: the first loss agrees (lora_B starts at zero) and every later one drifts. Seeding here from the
config's `seed` makes the adapter's initial weights, and so the whole run on a CPU, repeatable.
"""

from __future__ import annotations

from typing import Any

from axolotl.integrations.base import BasePlugin

DEFAULT_SEED = 42


class SeedAdapter(BasePlugin):
    def pre_lora_load(self, cfg: Any, model: Any) -> None:
        from transformers import set_seed

        seed = cfg.get("seed") if hasattr(cfg, "get") else None
        set_seed(DEFAULT_SEED if seed is None else int(seed))
