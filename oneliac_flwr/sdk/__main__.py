"""``python -m oneliac_flwr.sdk``: see :mod:`oneliac_flwr.sdk.cli`."""

import sys

from oneliac_flwr.sdk.cli import main

sys.exit(main())
