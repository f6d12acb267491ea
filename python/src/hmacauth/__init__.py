"""hmacauth: the hmacauth/1 protocol for Python.

A TCP service that accepts only clients holding a shared secret, proven by a
mutual HMAC challenge-response, with optional integrity or sealed records
and forward secrecy; it interoperates with the Go package
github.com/hmacauth/hmacauth. PROTOCOL.md in the repository is the
specification.

    ctx = hmacauth.Context(hmacauth.load_keys("/etc/app/keys"))
    with hmacauth.create_connection(("db.internal", 7000), ctx) as conn:
        conn.sendall(b"hello")
"""

from ._context import (
    DEFAULT_ACCEPT_QUEUE,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_KEY_SHARE_LIFETIME,
    DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_HANDSHAKES_PER_IP,
    Context,
    Keyring,
    Mode,
)
from ._errors import (
    AuthFailed,
    ConfigError,
    ExportError,
    HandshakeTimeout,
    HmacAuthError,
    IntegrityError,
    ProtocolError,
    WeakKey,
)
from ._keys import MAX_KEY_FILE_SIZE, MAX_KEY_ID_LEN, MIN_SECRET_LEN, Key, load_keys, parse_keys
from ._socket import ConnectionState, HmacAuthSocket, create_connection

MODE_AUTH = Mode.AUTH
MODE_INTEGRITY = Mode.INTEGRITY
MODE_SEALED = Mode.SEALED

__version__ = "1.0.0"

__all__ = [
    "AuthFailed",
    "ConfigError",
    "ConnectionState",
    "Context",
    "DEFAULT_ACCEPT_QUEUE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_KEY_SHARE_LIFETIME",
    "DEFAULT_MAX_HANDSHAKES",
    "DEFAULT_MAX_HANDSHAKES_PER_IP",
    "ExportError",
    "HandshakeTimeout",
    "HmacAuthError",
    "HmacAuthSocket",
    "IntegrityError",
    "Key",
    "Keyring",
    "MAX_KEY_FILE_SIZE",
    "MAX_KEY_ID_LEN",
    "MIN_SECRET_LEN",
    "MODE_AUTH",
    "MODE_INTEGRITY",
    "MODE_SEALED",
    "Mode",
    "ProtocolError",
    "WeakKey",
    "create_connection",
    "load_keys",
    "parse_keys",
]

from ._server import ConnectionShed, HandshakeEvent, HmacAuthMixIn, Listener, create_server  # noqa: E402

__all__ += ["ConnectionShed", "HandshakeEvent", "HmacAuthMixIn", "Listener", "create_server"]

from ._asyncio import open_connection, start_server  # noqa: E402

__all__ += ["open_connection", "start_server"]

from ._http import HTTPConnection  # noqa: E402

__all__ += ["HTTPConnection"]
