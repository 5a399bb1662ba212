"""A readable console: one copy of each log line, third-party noise left out.

- Flower's logger has its own console handler *and* propagates to the root logger, so
  under Hydra (which gives the root logger a console handler) every Flower line printed
  twice. :func:`tidy_console` removes Flower's handler when the root logger prints.
- alembic's migration chatter (Flower's state database), Flower's DEBUG lines and its
  deprecation banners (``run_simulation`` is what the in-process simulation uses on
  purpose) are dropped.
- Flower's ``aggregate_train: Received 1 results`` line is dropped where our strategy
  hands the inner strategy one synthetic reply (:func:`synthetic_reply_quiet`): it counts
  the synthetic reply, not the organizations (our round line says how many took part).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FLOWER_NOISE", "synthetic_reply_quiet", "tidy_console"]

#: Starts of Flower log messages (format strings) that never help a user of ours. Flower's
#: "Federated evaluation will be skipped" is wrong for us: without DP the evaluation rides
#: in the training message (docs: ``strategy.fraction_evaluate``).
FLOWER_NOISE = ("DEPRECATED FEATURE", "FEATURE UPDATE", "fraction_evaluate is set to 0.0")
_RECEIVED = "%s: Received %s results and %s failures"


class _DropMessages(logging.Filter):
    """Drop records whose format string starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


_NOISE_FILTER = _DropMessages(FLOWER_NOISE)


def tidy_console() -> None:
    """Make the console show each line once, without third-party noise (idempotent).

    Call it after the root logger is configured (Hydra does so before ``main`` runs).
    """
    from flwr.common.logger import console_handler

    flower = logging.getLogger("flwr")
    if logging.getLogger().handlers:  # the root logger prints: Flower's own handler would print again
        flower.removeHandler(console_handler)
        flower.setLevel(logging.INFO)  # Flower's logger passes DEBUG on; its own handler stopped it at INFO
    if _NOISE_FILTER not in flower.filters:
        flower.addFilter(_NOISE_FILTER)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(ray|flwr|google|grpc)\b")


@contextmanager
def synthetic_reply_quiet() -> Iterator[None]:
    """Within the block, drop Flower's ``Received N results`` line (see the module docstring)."""
    flower = logging.getLogger("flwr")
    quiet = _DropMessages((_RECEIVED,))
    flower.addFilter(quiet)
    try:
        yield
    finally:
        flower.removeFilter(quiet)
