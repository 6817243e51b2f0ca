"""``python -m tomograph``: the same as the ``tomograph`` command."""

import sys

from tomograph.cli import main

sys.exit(main())
