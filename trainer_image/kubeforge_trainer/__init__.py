"""The Kubeforge trainer: what runs inside training pods (`python -m kubeforge_trainer train`)."""

__version__ = "0.1.0"
