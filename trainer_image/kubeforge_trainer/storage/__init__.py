"""The storage initializer: copies a model or data set between an S3-compatible object store and a
local directory (`python -m kubeforge_trainer.storage fetch|publish`). It runs as the init container
of a server pod that serves an `s3://` model, and wherever an artifact is published; its exit codes
and one-line termination messages are the contract `kubeforge_api.storage` names."""
