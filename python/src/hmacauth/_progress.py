"""How a server handshake tells the Listener that runs it that it has made
progress (Go: acceptor.Progress, through the handshake's context): the
Listener sets a hook for the handshake's thread, and the handshake calls
progress() once a whole message from the client has passed its checks,
which a client without the key cannot do (a replayed ClientHello is
refused before it counts). A Listener with every slot taken evicts the
handshake that has made the least progress for the longest."""

from __future__ import annotations

import contextvars
from typing import Callable, Optional

_hook: "contextvars.ContextVar[Optional[Callable[[], None]]]" = contextvars.ContextVar("hmacauth_progress", default=None)


def progress() -> None:
    """Records a step of the server handshake running in this context; does
    nothing outside a Listener's handshake."""
    f = _hook.get()
    if f is not None:
        f()
