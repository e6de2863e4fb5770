"""`python -m oomdump.cli`: the same as the `oomdump` console script."""

import sys

from oomdump.cli.main import main

sys.exit(main())
