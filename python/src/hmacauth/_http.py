"""http.client over hmacauth: HTTPConnection for a server behind
hmacauth.Listen (Go) or the HmacAuthMixIn (Python)."""

from __future__ import annotations

import http.client
import socket
from typing import Any, Optional

from ._context import Context
from ._socket import create_connection

__all__ = ["HTTPConnection"]


class HTTPConnection(http.client.HTTPConnection):
    """http.client.HTTPConnection whose connection is an authenticated
    hmacauth connection made with context::

        conn = hmacauth.HTTPConnection("api.internal", 8443, context=ctx)
        conn.request("GET", "/health")
        print(conn.getresponse().read())
    """

    def __init__(self, host: str, port: Optional[int] = None, *, context: Context, **kw: Any) -> None:
        super().__init__(host, port, **kw)
        self.hmacauth_context = context

    def connect(self) -> None:
        timeout = self.timeout if self.timeout is not socket._GLOBAL_DEFAULT_TIMEOUT else None  # type: ignore[attr-defined]
        self.sock = create_connection((self.host, self.port), self.hmacauth_context, timeout, getattr(self, "source_address", None))
