"""``python -m steer_lens.cli``."""

import sys

from . import main

sys.exit(main())
