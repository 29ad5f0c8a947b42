"""``python -m dysonsgd``: the same as the ``dysonsgd`` console script."""

import sys

from dysonsgd.cli import main

sys.exit(main())
