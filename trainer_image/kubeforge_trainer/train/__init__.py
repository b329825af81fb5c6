"""Training strategies: data parallel (single, ddp, fsdp), pipeline, parameter server."""
