"""`python -m calibrate run --out profiles/measured/<gpu> [--only ...] [--smoke] [--ranks N]`."""

import sys

from calibrate.cli import main

sys.exit(main())
