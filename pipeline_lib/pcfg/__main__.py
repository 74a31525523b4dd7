"""``python -m pipeline_lib.pcfg <verb> ...``: the ``pcfg`` CLI verb without the project CLI."""

import sys

from pipeline_lib.pcfg.cli import main

sys.exit(main())
