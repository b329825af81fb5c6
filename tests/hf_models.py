"""Tiny models in the formats users bring, made here from a config (never downloaded), for tests and
benchmarks: a BERT-style text classifier and a Llama-style causal LM, each with a WordPiece tokenizer
trained on a few sentences and saved as a `tokenizer.json` fast tokenizer; a ViT-style image
classifier with its image processor's settings; and a small MLP written by `torch.export.save`.
Each builder writes into `directory` (created) and returns it; each takes well under 2 s."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.utils import logging as hf_logging

CORPUS = [
    "the model serves text and images",
    "a tiny tokenizer trained on a few sentences",
    "kubeforge trains compresses and serves pytorch models",
    "users bring their own models in common formats",
    "this movie was great and the actors were wonderful",
    "the service was slow and the food was cold",
    "batching pads every sequence to the longest one",
]
TEXT_LABELS = {0: "negative", 1: "neutral", 2: "positive"}
IMAGE_LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}
MAX_LENGTH = 32  # the text models' max positions: longer inputs are truncated
IMAGE_SIZE = 16
IMAGE_MEAN = [0.5, 0.4, 0.3]
IMAGE_STD = [0.2, 0.25, 0.3]
MLP_FEATURES = 8
MLP_CLASSES = 3
hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _wordpiece(bos_eos: bool) -> Tokenizer:
    """A WordPiece tokenizer trained on CORPUS: [CLS] text [SEP] (BERT), or <s> text (a causal LM)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if not bos_eos else ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordPiece(unk_token=specials[1]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials,
                                                              show_progress=False))
    first = specials[2]
    if bos_eos:
        tok.post_processor = processors.TemplateProcessing(single=f"{first} $A", special_tokens=[
            (first, tok.token_to_id(first))])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {specials[3]}", special_tokens=[(s, tok.token_to_id(s)) for s in specials[2:4]])
    return tok


def _save_tokenizer(tok: Tokenizer, directory: Path, **specials: str) -> int:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_LENGTH, padding_side="right",
                                   **specials)
    fast.save_pretrained(directory)
    return tok.get_vocab_size()


def tiny_bert_classifier(directory: Path) -> Path:
    """BertForSequenceClassification (3 labels, 2 layers of width 32) with its tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _save_tokenizer(_wordpiece(False), directory, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_LENGTH, id2label=TEXT_LABELS,
                        label2id={v: k for k, v in TEXT_LABELS.items()})
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    return directory


def tiny_llama(directory: Path) -> Path:
    """LlamaForCausalLM (2 layers of width 32, grouped-query attention) with its tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _save_tokenizer(_wordpiece(True), directory, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).eval().save_pretrained(directory)
    return directory


def tiny_vit_classifier(directory: Path) -> Path:
    """ViTForImageClassification (16x16 RGB, 4 labels) with its image processor's settings."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, id2label=IMAGE_LABELS,
                       label2id={v: k for k, v in IMAGE_LABELS.items()})
    ViTForImageClassification(config).eval().save_pretrained(directory)
    processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                 "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "resample": 2, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD}
    (directory / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return directory


class TwoInputMlp(torch.nn.Module):
    """Features (FP32 [N, 8]) and a per-row class mask (INT64 [N, 3]) in, masked logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(MLP_FEATURES, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, MLP_CLASSES))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.body(features) + (mask - 1).float() * 1000.0
        return {"logits": logits, "probabilities": logits.softmax(-1)}


def exported_mlp(directory: Path) -> Path:
    """`model.pt2`: TwoInputMlp exported with a dynamic batch dimension."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", max=1024)
    example = (torch.randn(2, MLP_FEATURES), torch.ones(2, MLP_CLASSES, dtype=torch.int64))
    program = torch.export.export(TwoInputMlp().eval(), example,
                                  dynamic_shapes={"features": {0: batch}, "mask": {0: batch}})
    torch.export.save(program, directory / "model.pt2")
    return directory
