"""Paged attention inside a transformers model. The engine runs the model's own forward pass on one
packed row of tokens (every sequence's tokens of the step, side by side, with their positions); an
attention implementation registered with transformers under `PAGED` writes each token's keys and
values into its slot of the block pool and attends each sequence's queries to that sequence's
cached keys only: decoding sequences together (their block tables gathered and padded), each prompt
chunk causally over its own prefix. Without the engine's step argument it is plain SDPA, so the
same model still answers ordinary forward passes (the Open Inference Protocol routes).

Why our own and not transformers' continuous batching: on CPU its SDPA path attends every packed
query to every packed key under a block-diagonal mask, and measured 1.6x (short prompts) to 2.4x
(300-600-token prompts) slower than this for 32 sequences (docs/serving.md, "Language models")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PAGED = "kubeforge_paged"
STEP_ARG = "kubeforge_step"


@dataclass
class KVCache:
    """Keys and values of every layer: [KV heads, blocks, block tokens, head dim] each (heads outermost:
    a gather of blocks is one `index_select` that SDPA reads without another copy).

    The memory is allocated uninitialised and blocks are zeroed when first used (`zero_below`): a
    block's slots past a sequence's last token are masked out of attention, but a masked NaN still
    turns the output into NaN (its weight 0 times NaN), and reused memory may hold any bits."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    block_tokens: int
    clean: int = 0  # blocks [0, clean) hold numbers (zeroed, or written since)

    def zero_below(self, blocks: int) -> None:
        """Zero the blocks from `clean` up to `blocks` (the pool hands out never-used blocks in order)."""
        if blocks <= self.clean:
            return
        for tensor in (*self.keys, *self.values):
            tensor[:, self.clean:blocks].zero_()
        self.clean = blocks

    @classmethod
    def allocate(cls, layers: int, blocks: int, block_tokens: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> KVCache:
        # torch.empty: pages of a large budget are touched (resident) only once used
        shape = (kv_heads, blocks, block_tokens, head_dim)
        return cls([torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)],
                   [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)], block_tokens)


@dataclass
class Prefill:
    start: int  # first row of the chunk in the packed step
    count: int
    blocks: torch.Tensor  # [n] the sequence's block table up to the chunk's end
    mask: torch.Tensor  # [count, n * block tokens] causal, offset by the cached prefix


@dataclass
class StepLayout:
    """Where a step's tokens go and what each attends to."""

    cache: KVCache
    slots: torch.Tensor  # [T] flat slot of each token of the step
    decode_rows: torch.Tensor | None  # [B] rows of decoding tokens in the packed step
    decode_blocks: torch.Tensor | None  # [B, n] their block tables, padded
    decode_mask: torch.Tensor | None  # [B, 1, 1, n * block tokens] the positions each may see
    prefills: list[Prefill]


def paged_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query [1, heads, T, d], key/value [1, kv heads, T, d] ->
    ([1, T, heads, d], no weights)."""
    step: StepLayout | None = kwargs.pop(STEP_ARG, None)
    if step is None:
        out: tuple[torch.Tensor, None] = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        return out
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise NotImplementedError("paged attention has no sliding window or soft-capping")
    layer: int = module.layer_idx  # type: ignore[assignment]
    keys, values = step.cache.keys[layer], step.cache.values[layer]
    kv_heads, head_dim = keys.shape[0], keys.shape[3]
    keys.view(kv_heads, -1, head_dim).index_copy_(1, step.slots, key[0])
    values.view(kv_heads, -1, head_dim).index_copy_(1, step.slots, value[0])
    out_rows = query.new_empty(query.shape[2], query.shape[1], query.shape[3])  # [T, heads, d]
    if step.decode_rows is not None and step.decode_blocks is not None:
        q = query[0][:, step.decode_rows].transpose(0, 1).unsqueeze(2)  # [B, heads, 1, d]
        k = _gather(keys, step.decode_blocks)
        v = _gather(values, step.decode_blocks)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=step.decode_mask, scale=scaling, enable_gqa=True)
        out_rows[step.decode_rows] = o.squeeze(2)
    for p in step.prefills:
        q = query[:, :, p.start:p.start + p.count]
        k = _gather(keys, p.blocks.unsqueeze(0))
        v = _gather(values, p.blocks.unsqueeze(0))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=p.mask, scale=scaling, enable_gqa=True)
        out_rows[p.start:p.start + p.count] = o[0].transpose(0, 1)
    return out_rows.unsqueeze(0), None


def _gather(cache: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """[B, n] block tables -> [B, kv heads, n * block tokens, d]."""
    b, n = tables.shape
    blocks = cache.index_select(1, tables.reshape(-1))  # [kv heads, B * n, block tokens, d]
    return blocks.view(cache.shape[0], b, n * cache.shape[2], cache.shape[3]).transpose(0, 1)


def register() -> None:
    """Make `PAGED` an attention implementation transformers models can be switched to."""
    AttentionInterface.register(PAGED, paged_attention)
    AttentionMaskInterface.register(PAGED, sdpa_mask)  # the plain path's masks; the paged path ignores them
