"""The model a fine-tune trains: the base causal LM loaded offline from its directory (safetensors only,
no remote code, fp32), LoRA adapters from peft on the named modules when the method is lora, and the
strategy's wrapping: DDP, or FSDP2 `fully_shard` on each decoder layer (the classes the model names
as never to be split) and then on the root, gathering and reducing over rings on gloo (see
train/ring.py). Before training, packing is checked on the loaded model:
an example's logits inside a packed row must equal its logits alone, or the model's attention
ignores per-example positions and the job is refused."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from kubeforge_api.finetune import Finetune
from kubeforge_api.trainingjob import Strategy
from torch import nn

from ..context import ConfigError
from ..train.common import World

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PACKING_TOLERANCE = 1e-4


def quiet() -> None:
    """No progress bars or advice in a pod's log."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def load_tokenizer(directory: Path, name: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    quiet()
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{name}: cannot load the base model's tokenizer: {' '.join(str(e).split())}") from None
    return tokenizer


def load_base(directory: Path, name: str) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    quiet()
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, trust_remote_code=False,
                                                     use_safetensors=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{name}: cannot load the base model: {' '.join(str(e).split())}") from None
    return model


def lora_config(ft: Finetune) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(r=ft.lora.rank, lora_alpha=ft.lora.alpha,  # type: ignore[arg-type]  # a float scales fine lora_dropout=ft.lora.dropout,
                      target_modules=list(ft.lora.target_modules), task_type=TaskType.CAUSAL_LM)


def with_method(base: PreTrainedModel, ft: Finetune) -> nn.Module:
    """The base itself (full) or the base with adapters (lora; only the adapters train)."""
    if ft.method == "full":
        return base
    from peft import get_peft_model

    try:
        return cast(nn.Module, get_peft_model(base, lora_config(ft)))
    except ValueError as e:
        raise ConfigError(f"finetune.lora.targetModules: {' '.join(str(e).split())}") from None


def trainable_fraction(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(1, total)


def layer_classes(model: nn.Module) -> set[str]:
    found: set[str] = set()
    for module in model.modules():
        found.update(getattr(module, "_no_split_modules", None) or ())
    return found


def wrap(model: nn.Module, strategy: Strategy, world: World) -> nn.Module:
    """The model as the strategy trains it (alone on one rank)."""
    if world.size == 1:
        return model
    if strategy == Strategy.FSDP:
        from torch.distributed.fsdp import fully_shard

        from ..train.ring import use_rings

        classes = layer_classes(model)
        for module in list(model.modules()):
            if type(module).__name__ in classes:
                use_rings(fully_shard(module))
        use_rings(fully_shard(model))
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, broadcast_buffers=False)


def check_limits(base: PreTrainedModel, max_len: int) -> None:
    limit = getattr(base.config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_len > limit:
        raise ConfigError(f"finetune.maxSeqLength={max_len} exceeds the base model's {limit} positions")


@torch.no_grad()
def check_packing(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse packing on a model whose attention crosses examples (see the module docstring)."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or len(tokenizer))
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, vocab, (1, n), generator=generator) for n in (5, 4))
    was_training = model.training
    model.eval()
    alone = model(input_ids=b, use_cache=False).logits
    packed = model(input_ids=torch.cat([a, b], 1), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]]),
                   use_cache=False).logits[:, 5:]
    model.train(was_training)
    if float((packed - alone).abs().max()) > PACKING_TOLERANCE:
        raise ConfigError("finetune.packing: this model's attention does not keep packed examples apart "
                          "(its attention implementation ignores position ids); set packing: false")
