"""`TrainingJob.spec.finetune`: fine-tuning a pretrained causal language model (a Hugging Face
directory on a claim or in an object store) on the user's chat, prompt-completion or plain-text
JSONL, fully or with LoRA, under the job's strategy (ddp or fsdp); and what the job reports about
it (`status.evaluation`: the eval loss and perplexity before and after). Pydantic only."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from .model import Finite, Model, NonNegative, Rule
from .sources import SecretRef, clean_uri_rule
from .storage import MAX_URI_LENGTH, STORAGE_URI_PATTERN, is_s3

ModuleName = Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]
# Where a fine-tune pod finds its inputs (mounted from a claim or copied from an object store).
MODEL_DIR_ENV: Final = "KUBEFORGE_FINETUNE_MODEL_DIR"
DATA_ENV: Final = "KUBEFORGE_FINETUNE_DATA"
EVAL_DATA_ENV: Final = "KUBEFORGE_FINETUNE_EVAL_DATA"
ADAPTER_DIR: Final = "adapter"  # beside `artifact` (the merged model) in the job's storage


def _secret_with_s3(cls_name: str) -> Rule:
    return Rule("has(self.secretRef) == self.uri.startsWith('s3://')",
                f"{cls_name}.secretRef is required with an s3:// uri and allowed only with one", ".secretRef",
                check=lambda s: (s.secret_ref is not None) == is_s3(s.uri))


class Source(Model):
    """A file or directory on a claim (`pvc://CLAIM/PATH`) or in an object store (`s3://BUCKET/KEY`)."""

    crd_rules = (_secret_with_s3("source"), clean_uri_rule("uri"))

    uri: str = Field(max_length=MAX_URI_LENGTH, pattern=STORAGE_URI_PATTERN, description=(
        "`pvc://CLAIM/PATH` or `s3://BUCKET/KEY`."))
    secret_ref: SecretRef | None = Field(default=None, description="With an s3:// uri: the credentials Secret.")


class DataSource(Source):
    """Training or evaluation data: a JSONL file."""

    crd_rules = (_secret_with_s3("data"), clean_uri_rule("uri"))

    format: Literal["messages", "prompt-completion", "text"] = Field(default="messages", description=(
        "messages: `{\"messages\": [{\"role\", \"content\"}, ...]}` per line, rendered with the tokenizer's chat "
        "template, loss on the assistant turns only; prompt-completion: `{\"prompt\", \"completion\"}`, loss on the "
        "completion only; text: `{\"text\"}`, loss on every token."))


class Lora(Model):
    """Low-rank adapters (peft) on the named modules; the base weights stay frozen."""

    rank: int = Field(default=8, ge=1, le=1024, description="Rank r of each adapter.")
    alpha: float = Field(default=16.0, gt=0, le=4096, description="Scaling alpha (the update is scaled by alpha/r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[ModuleName] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], min_length=1, max_length=32,
        description="Names (suffixes) of the Linear modules that get adapters, e.g. q_proj, v_proj.")


class Finetune(Model):
    """Fine-tune a pretrained causal LM: the third way to say what a TrainingJob trains."""

    crd_rules = (
        Rule("self.method == 'lora' || !has(self.lora)", "finetune.lora is allowed only with method lora", ".lora",
             check=lambda f: f.method == "lora" or "lora" not in f.model_fields_set),
    )

    model: Source = Field(description=(
        "The base model: a Hugging Face causal-LM directory (config.json, *.safetensors, tokenizer with a chat "
        "template for the messages format)."))
    data: DataSource = Field(description="The training data (JSONL).")
    eval_data: DataSource | None = Field(default=None, description=(
        "Evaluation data (JSONL, the same formats); without it, evalFraction of data is held back."))
    eval_fraction: float = Field(default=0.05, gt=0, lt=1, description=(
        "Share of data held back for evaluation when evalData is not given."))
    method: Literal["full", "lora"] = Field(default="lora", description=(
        "full: every weight trains; lora: only low-rank adapters train, and the job publishes the merged model and "
        "the adapter."))
    lora: Lora = Field(default_factory=Lora, description="Adapter settings (method lora).")
    max_seq_length: int = Field(default=512, ge=8, le=131072, description=(
        "Longest training sequence in tokens; longer examples are truncated."))
    packing: bool = Field(default=True, description=(
        "Pack short examples into full sequences; attention never crosses from one example into another."))
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, ge=1, le=100_000_000, description=(
        "Stop after this many optimizer steps, even mid-epoch."))
    batch_size: int = Field(default=8, ge=1, le=4096, description="Sequences per optimizer step and rank.")
    gradient_accumulation: int = Field(default=1, ge=1, le=1024, description=(
        "Micro-steps whose gradients add up to one optimizer step."))
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(default=0, ge=0, le=1_000_000, description="Steps of linear warm-up, then cosine decay.")
    seed: int = Field(default=0, ge=0, le=4294967295, description="Random seed (adapter init, data order).")


class EvalPoint(Model):
    """Loss and perplexity on the evaluation data."""

    loss: Finite | None = Field(default=None, description="Mean token cross-entropy.")
    perplexity: NonNegative | None = Field(default=None, description="exp(loss).")


class Evaluation(Model):
    """`status.evaluation` of a fine-tune: the base model before training, the result after."""

    before: EvalPoint | None = Field(default=None, description="The base model on the evaluation data.")
    after: EvalPoint | None = Field(default=None, description="The fine-tuned model on the same data.")
    trainable_fraction: float | None = Field(default=None, ge=0, le=1, description=(
        "Share of the model's parameters that trained (all of them for method full)."))
    tokens_per_second: NonNegative | None = Field(default=None, description="Training tokens per second, all ranks.")
