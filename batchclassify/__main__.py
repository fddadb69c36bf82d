"""``python -m batchclassify``: the same as the ``batchclassify`` command."""

import sys

from .cli import main

sys.exit(main())
