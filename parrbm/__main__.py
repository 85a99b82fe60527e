"""``python -m parrbm``: the command line (as the ``parrbm`` script)."""

import sys

from parrbm.cli import main

sys.exit(main())
