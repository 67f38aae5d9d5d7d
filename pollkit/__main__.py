"""`python -m pollkit` runs the command line."""

import sys

from pollkit.cli import main

sys.exit(main())
