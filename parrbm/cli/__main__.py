import sys

from parrbm.cli import main

sys.exit(main())
