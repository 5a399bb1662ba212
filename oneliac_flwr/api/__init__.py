"""Adapter 2: the REST coordinator (FastAPI served by uvicorn) over the same core as Flower.

Start it with ``python -m oneliac_flwr.api serve`` (see ``docs/rest-api.md``).
"""

from oneliac_flwr.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
