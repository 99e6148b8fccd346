"""``python -m detgym ...``: the ``detgym`` command line (:mod:`detgym.cli`)."""

import sys

from detgym.cli import main

sys.exit(main())
