"""`python -m secateurs` runs the `secateurs` command line."""

import sys

from . import main

sys.exit(main())
