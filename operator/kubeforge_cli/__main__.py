"""`python -m kubeforge_cli` is the `kubeforge` command."""

import sys

from .main import main

sys.exit(main())
