"""Where a pod's termination message goes (the kubelet reads it when the container ends). A module
of its own, free of torch, so the command wrapper starts the user's command without loading it."""

from __future__ import annotations

import os
from pathlib import Path

from kubeforge_api.constants import TERMINATION_LOG_PATH, Env


def termination_log() -> Path:
    """Where the kubelet reads the termination message; local runs point it into the run folder."""
    return Path(os.environ.get(Env.TERMINATION_LOG, TERMINATION_LOG_PATH))
