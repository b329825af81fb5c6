"""Compression of a trained Kubeforge model, or of a Hugging Face model users bring (judged on their
own evaluation data): int8 quantization (dynamic, static; eager torch.ao or torchao behind one
adapter), structured and unstructured pruning with a short fine-tune, and distillation into a smaller
student of the same family; each candidate is evaluated, timed and gated against an accuracy budget,
and written as a pickle-free artifact the one loader rebuilds. What the loader needs to rebuild a
variant (the int8 back ends and codec, pruned layer shapes, a transformers structure from its config)
is the model format in `kubeforge_trainer.variants`, which imports nothing from here."""
