"""`python -m wbc_ray.cli`: the same as the `wbc-ray` command."""

import sys

from ._main import main

sys.exit(main())
