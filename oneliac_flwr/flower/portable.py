"""A ClientApp that travels to a worker process as the call that builds it.

Flower's simulation engine (Ray backend) pickles the ClientApp together with every
message it hands to a worker process. A ClientApp built by a function
(:func:`~oneliac_flwr.flower.clientapp.build_client_app`) holds closures, which
``cloudpickle`` serializes by value: the code of every handler and everything they close
over (the experiment config), about 20 kB and several milliseconds per message, paid by
the engine's driver for each of the ``n`` messages of every exchange. A
:class:`PortableClientApp` pickles as ``(reference of its builder, builder arguments)``
instead; a worker process builds it once per builder and arguments and reuses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable
from functools import lru_cache
from typing import Any

from flwr.clientapp import ClientApp

from oneliac_flwr.errors import ConfigError

__all__ = ["PortableClientApp"]


class PortableClientApp(ClientApp):
    """A :class:`flwr.clientapp.ClientApp` that pickles as a reference to its builder.

    Parameters
    ----------
    builder : str
        ``"module:function"`` of a module-level function that returns this same app
        when called with ``args``.
    args : tuple
        Hashable arguments of ``builder`` (pickled by value; e.g. a frozen config).

    Notes
    -----
    The builder must rebuild an equivalent app from ``args`` alone: handlers of a
    portable app may not depend on state captured outside ``args``.
    """

    def __init__(self, *, builder: str, args: tuple[Hashable, ...]) -> None:
        super().__init__()
        if not isinstance(builder, str) or builder.count(":") != 1:
            raise ConfigError("builder", f"expected 'module:function', got {builder!r}")
        try:
            hash(args)
        except TypeError as exc:
            raise ConfigError("args", f"expected hashable builder arguments: {exc}") from None
        self._builder = builder
        self._args = tuple(args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._builder, self._args))


@lru_cache(maxsize=32)
def _rebuild(builder: str, args: tuple[Hashable, ...]) -> ClientApp:
    """Import ``builder`` and call it with ``args`` (once per process, builder and arguments)."""
    module_name, _, attribute = builder.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(*args)
