"""``python -m oneliac_flwr.api serve [--generate-admin-token] [KEY=VALUE ...]``.

Overrides are Hydra's (``conf/service.yaml``: the usual groups plus ``coordinator``), e.g.
``python -m oneliac_flwr.api serve coordinator.port=8080 coordinator.database_url=sqlite:///fl.db``.
"""

from __future__ import annotations

import sys

from oneliac_flwr.api.serve import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
