"""Fine-tuning pretrained causal language models (`spec.finetune`): the user's JSONL read and checked
line by line, rendered and masked (`records`, `encode`), packed into sequences (`batches`), trained
fully or with LoRA under ddp or fsdp (`model`, `loop`), checkpointed for exact resumes (`state`),
evaluated before and after, and exported as a merged Hugging Face model plus the adapter (`export`)."""

from .run import train

__all__ = ["train"]
