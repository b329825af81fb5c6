"""Serving causal language models: OpenAI-compatible routes over an engine of our own that batches
continuously (requests join and leave the running batch at every step) with a paged KV cache and
prefix caching, on the model's own forward pass."""
