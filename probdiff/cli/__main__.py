"""``python -m probdiff.cli`` (and ``torchrun -m probdiff.cli``) runs the ``probdiff`` command."""

import sys

from .app import main

sys.exit(main())
