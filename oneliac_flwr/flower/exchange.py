"""One exchange with the organizations: push messages, wait for the replies.

Flower 1.42's ``HttpGrid.send_and_receive`` (the grid of a real SuperLink) sleeps 3 s
between two pulls, so every exchange of a round waits up to 3 s after the last reply
has arrived. This helper pulls every :data:`POLL_SECONDS` instead; on any other grid
(simulation, tests) it is the grid's own ``send_and_receive``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["POLL_SECONDS", "send_and_receive"]

#: Seconds between two pulls of replies from a real SuperLink (one small HTTP request each).
POLL_SECONDS = 0.2


def send_and_receive(grid: Grid, messages: Iterable[Message], *, timeout: float) -> list[Message]:
    """Push ``messages`` and return the replies that arrive within ``timeout`` seconds.

    Same contract as ``Grid.send_and_receive``: late replies are dropped.
    """
    from flwr.superlink.grid.http_grid import HttpGrid  # the grid a deployed ServerApp gets

    if not isinstance(grid, HttpGrid):
        return list(grid.send_and_receive(messages, timeout=timeout))
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        arrived = list(grid.pull_messages(pending))
        replies.extend(arrived)
        pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    return replies
