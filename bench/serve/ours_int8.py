"""Our server with the int8 variant of the benchmark model: `python -m kubeforge_server` with a
loader that quantizes after the one artifact loader (until compressed artifacts load natively)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench.serve.*
from kubeforge_server.__main__ import main

from bench.serve.serve_model import load_int8

if __name__ == "__main__":
    sys.exit(main(load_int8))
