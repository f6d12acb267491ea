"""How a server handshake tells the Listener that runs it how it goes (Go:
acceptor.Progress, through the handshake's context, and the handshake's
error): the Listener sets hooks for the handshake's thread, and the
handshake calls progress() once a whole message from the client has passed
its checks, which a client without the key cannot do (a replayed
ClientHello is refused before it counts), and failed() when it has failed,
before it drains its refused client. A Listener with every slot taken
evicts the handshake that has made the least progress for the longest; one
that had failed already keeps its own reason."""

from __future__ import annotations

import contextvars
from typing import Callable, Optional, Tuple

# (progress, failed) of the Listener's handshake running in this context.
_hook: "contextvars.ContextVar[Optional[Tuple[Callable[[], None], Callable[[], None]]]]" = contextvars.ContextVar(
    "hmacauth_progress", default=None)


def progress() -> None:
    """Records a step of the server handshake running in this context; does
    nothing outside a Listener's handshake."""
    h = _hook.get()
    if h is not None:
        h[0]()


def failed() -> None:
    """Records that the server handshake running in this context has
    failed, before its refusal drains the client; does nothing outside a
    Listener's handshake."""
    h = _hook.get()
    if h is not None:
        h[1]()
