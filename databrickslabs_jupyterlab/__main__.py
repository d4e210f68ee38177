"""``python -m databrickslabs_jupyterlab``: the same as the ``databrickslabs-jupyterlab`` command."""

import sys

from .cli import main

sys.exit(main())
