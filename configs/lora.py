"""Option group `lora` (package `lora`): LoRA adapters (cosmos_transfer/lora.py, through peft: the `lora` extra).
The trainer adds them after building the model and before sharding it; `lora=null` (the default) trains without.

    base      Cosmos-Predict2.5's recipe on the base network: rank 32, alpha 32 on the attention projections
              (q, k, v, output) and the MLP layers of every block (Transfer1 and 2.5 names); a control branch
              keeps training in full (Transfer1's net_ctrl, and Transfer2.5's control blocks inside `net`)
    control   the same adapters on the control branches instead (Transfer1's `net_ctrl.<key>`, Transfer2.5's
              `net.control_blocks`), whose own zero-initialized layers keep training in full

Change what is adapted with `lora.rank=16 lora.alpha=16`, or `lora.target_modules=[...]` (regular expressions matched
against whole nn.Linear names, e.g. 'net\\.blocks\\..*\\.q_proj'); a pattern that matches nothing is an error.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L
from cosmos_transfer.lora import BASE_TARGETS, BASE_TRAINABLE, CONTROL_TARGETS, CONTROL_TRAINABLE

LORA_BASE = L("cosmos_transfer.lora.LoRA")(rank=32, alpha=32.0, target_modules=list(BASE_TARGETS),
                                           trainable=list(BASE_TRAINABLE), dropout=0.0)
LORA_CONTROL = L("cosmos_transfer.lora.LoRA")(rank=32, alpha=32.0, target_modules=list(CONTROL_TARGETS),
                                              trainable=list(CONTROL_TRAINABLE), dropout=0.0)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="lora", package="lora", name="base", node=LORA_BASE)
    cs.store(group="lora", package="lora", name="control", node=LORA_CONTROL)
