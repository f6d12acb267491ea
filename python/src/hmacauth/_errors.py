"""Typed exceptions, mirroring the Go package's sentinel errors.

Every refusal raises one of them; its message starts with the Go sentinel's
text and then says what happened and what to check, as the Go errors do.
"""

from __future__ import annotations

import socket

__all__ = [
    "HmacAuthError",
    "AuthFailed",
    "ProtocolError",
    "HandshakeTimeout",
    "WeakKey",
    "ConfigError",
    "IntegrityError",
    "ExportError",
]


class HmacAuthError(OSError):
    """Base class of every error this package raises for a refusal.

    Like ssl.SSLError it is an OSError, so a server loop that handles socket
    errors handles these too.
    """

    sentinel = "hmacauth: error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.sentinel + (": " + detail if detail else ""))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.sentinel


class AuthFailed(HmacAuthError):
    """The peer did not prove that it holds the key (Go: ErrAuthFailed): a
    wrong secret, a key ID the other side does not know, a bad proof, or a
    server that closed the connection during the handshake."""

    sentinel = "hmacauth: authentication failed"


class ProtocolError(HmacAuthError):
    """The peer does not speak hmacauth/1 or sent a malformed message, or a
    record that authenticated but breaks the protocol (Go: ErrProtocol)."""

    sentinel = "hmacauth: protocol error"


class HandshakeTimeout(HmacAuthError, socket.timeout):
    """The handshake did not finish within the handshake timeout (Go:
    ErrHandshakeTimeout). It is also a socket.timeout (TimeoutError)."""

    sentinel = "hmacauth: handshake timed out"


class WeakKey(HmacAuthError, ValueError):
    """A key's secret is shorter than MIN_SECRET_LEN bytes (Go: ErrWeakKey)."""

    sentinel = "hmacauth: weak key"


class ConfigError(HmacAuthError, ValueError):
    """A Context, key or key file cannot be used (Go: ErrConfig)."""

    sentinel = "hmacauth: invalid config"


class IntegrityError(HmacAuthError):
    """A record failed its check, or the stream was cut without the peer's
    close record (Go: ErrIntegrity). The connection is unusable after it."""

    sentinel = "hmacauth: record integrity check failed"


class ExportError(HmacAuthError, ValueError):
    """export_keying_material cannot give what it was asked for (Go:
    ErrExport)."""

    sentinel = "hmacauth: cannot export keying material"


def quote(b: bytes | str) -> str:
    """Quotes peer or key bytes for a message, bounded, as Go's %q would."""
    if isinstance(b, str):
        b = b.encode("utf-8", "replace")
    out = []
    for c in b[:16]:
        if c == 0x22:
            out.append('\\"')
        elif c == 0x5C:
            out.append("\\\\")
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x0D:
            out.append("\\r")
        elif c == 0x09:
            out.append("\\t")
        else:
            out.append("\\x%02x" % c)
    return '"' + "".join(out) + '"' + ("..." if len(b) > 16 else "")
