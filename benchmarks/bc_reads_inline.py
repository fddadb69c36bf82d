"""``python -m batchclassify`` with every read on the event loop, for ``instructions.py``.

Under valgrind every read takes ~50x longer, which would send reads to threads (the read
policy's budget is 2 ms) and measure another code path than a normal run takes. Benchmark
only: the product has no such switch.
"""

import sys

from batchclassify.inputs import readpolicy

defaults = readpolicy.ReadPolicy.__init__.__kwdefaults__
assert defaults is not None
defaults["budget"] = 3600.0

from batchclassify.commands.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
