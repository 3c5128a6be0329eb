"""`python -m orchestrator` is the same as `accelsweep`."""

import sys

from orchestrator.cli import main

sys.exit(main())
