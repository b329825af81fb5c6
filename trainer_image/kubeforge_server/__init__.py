"""The Kubeforge inference server (`python -m kubeforge_server`): serves one model artifact over the
Open Inference Protocol v2 (REST) with dynamic batching, loading it through the trainer's one
artifact loader. It ships in the trainer image."""

__version__ = "0.1.0"
