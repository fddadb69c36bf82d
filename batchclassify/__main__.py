"""``python -m batchclassify``: the same as the ``batchclassify`` command."""

import sys

from .commands.cli import main

sys.exit(main())
