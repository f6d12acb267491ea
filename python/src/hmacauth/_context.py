"""Context: the keys and settings of one side, as the Go package's Config."""

from __future__ import annotations

import enum
import platform
import socket
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Tuple

from ._errors import ConfigError
from ._handshake import ClientNonces, KeySet, KeyShares, _cannot_run, can_run
from ._keys import Key

if TYPE_CHECKING:
    from ._socket import HmacAuthSocket

__all__ = [
    "Mode",
    "Context",
    "Keyring",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_KEY_SHARE_LIFETIME",
    "DEFAULT_MAX_HANDSHAKES",
    "DEFAULT_MAX_HANDSHAKES_PER_IP",
    "DEFAULT_ACCEPT_QUEUE",
]

DEFAULT_HANDSHAKE_TIMEOUT = 5.0
DEFAULT_KEY_SHARE_LIFETIME = 1.0
DEFAULT_MAX_HANDSHAKES = 256
DEFAULT_MAX_HANDSHAKES_PER_IP = 16
DEFAULT_ACCEPT_QUEUE = 64


class Mode(enum.IntEnum):
    """The protection of the bytes after the handshake (PROTOCOL.md 6)."""

    AUTH = 0  #: raw bytes after a mutual handshake
    INTEGRITY = 1  #: records with a MAC
    SEALED = 2  #: encrypted and authenticated records

    def __str__(self) -> str:
        return self.name.lower()


def _has_aes_hardware() -> bool:
    """Whether the CPU has AES and carry-less multiply instructions, which
    OpenSSL's AES-GCM uses; as the Go package, prefer ChaCha20-Poly1305
    without them."""
    machine = platform.machine().lower()
    try:
        with open("/proc/cpuinfo", "rb") as f:
            info = f.read(1 << 20).decode("ascii", "replace")
    except OSError:
        # No /proc (macOS, Windows): the 64-bit CPUs these run on have AES.
        return machine in ("x86_64", "amd64", "arm64", "aarch64")
    flags = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "aes" in flags and "pclmulqdq" in flags
    if machine in ("aarch64", "arm64"):
        return "aes" in flags and "pmull" in flags
    return False


_aes_hw: Optional[bool] = None


def _prefers_chacha() -> bool:
    global _aes_hw
    if _aes_hw is None:
        _aes_hw = _has_aes_hardware()
    return not _aes_hw


class Keyring:
    """Keys that can be replaced while Contexts use them, to rotate keys
    without a restart (Go: Keyring): pass it as Context(keyring=...); one
    Keyring may serve many Contexts.

    Replacing the keys affects handshakes that start afterwards only: a
    connection keeps the key it proved, and a handshake in progress finishes
    with the keys it started with. A client proves the first key; a server
    accepts any of them. To rotate: set([old, new]) on the servers, then
    set([new]) on the clients, then set([new]) on the servers.

    Keyring() holds no keys; handshakes with it fail with ConfigError until
    set succeeds. It is safe for use from several threads; its repr shows
    key IDs, never secrets.
    """

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self._state: Optional[Tuple[KeySet, List[Key]]] = None
        keys = list(keys)
        if keys:
            self.set(keys)

    def set(self, keys: Iterable[Key]) -> None:
        """Replaces the keys, as a whole: a handshake uses either all the
        old keys or all the new ones. If a key is invalid (WeakKey,
        ConfigError), the list is empty or an ID appears twice, it raises
        and the Keyring keeps its old keys."""
        if isinstance(keys, Key):
            keys = [keys]
        keys = list(keys)
        ks = KeySet(keys, "the key list for the Keyring")
        self._state = (ks, keys)  # one assignment: atomic for other threads

    def keys(self) -> List[Key]:
        """The keys, the one a client proves first."""
        st = self._state
        return list(st[1]) if st is not None else []

    def ids(self) -> List[str]:
        """The key IDs in order."""
        return [k.id for k in self.keys()]

    def _keyset(self) -> KeySet:
        st = self._state
        if st is None:
            raise ConfigError("the Keyring holds no keys; fill it with Keyring(keys) or Keyring.set")
        return st[0]

    def __repr__(self) -> str:
        return "hmacauth.Keyring(key_ids=%r, secrets redacted)" % (self.ids(),)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth.Keyring is not picklable: it holds secrets")


def _seconds(value: Optional[float], default: float, name: str) -> Optional[float]:
    """Go's rule for durations: zero means the default, negative (or None)
    means no bound."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError("Context.%s must be a number of seconds, not %s" % (name, type(value).__name__))
    if value == 0:
        return default
    if value < 0:
        return None
    return float(value)


class Context:
    """The keys and settings of one side of hmacauth connections, as the Go
    package's Config (same names in Python spelling, same defaults).

    ``keys``: the shared secrets; a client proves keys[0], a server accepts
    any. ``keyring``: a Keyring that holds the keys instead (keys is then
    ignored), for rotation without a restart. ``mode``: the least protection this side accepts; a connection runs
    at the stronger of both sides' modes. ``forward_secrecy``: mix an X25519
    exchange into the session keys. ``key_share_lifetime`` (seconds): how
    long one X25519 key pair, and the results computed with it, are reused
    (0: 1 s; negative: a new one per handshake). ``handshake_timeout`` (seconds): bounds each handshake (0:
    5 s; negative or None: no bound). ``max_handshakes``,
    ``max_handshakes_per_ip`` and ``accept_queue`` are a Listener's caps,
    the first two start_server's too, ints (0: the defaults 256, 16, 64; a
    negative per-IP cap means none); with every handshake slot taken, a
    new connection evicts the handshake that has made the least progress
    for the longest (see Listener).
    ``prefer_chacha20``: ask for ChaCha20-Poly1305 records; None (the
    default) asks for it when the CPU lacks AES instructions.
    ``on_handshake(event)`` is called by a Listener after every server
    handshake, successful or not; ``logger`` (a logging.Logger) receives one
    record per refused connection.

    A server refuses a ClientHello that a client handshake of the same
    Context has in flight (a reflection): a process that listens and dials
    its own listeners gives each end a Context of its own.

    ModeAuth without forward secrecy needs only the standard library; the
    other modes and forward secrecy need the 'cryptography' package, and a
    Context that asks for them without it raises ConfigError.
    """

    def __init__(
        self,
        keys: Iterable[Key] = (),
        mode: Mode = Mode.AUTH,
        *,
        keyring: Optional[Keyring] = None,
        forward_secrecy: bool = False,
        key_share_lifetime: float = DEFAULT_KEY_SHARE_LIFETIME,
        handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        max_handshakes_per_ip: int = DEFAULT_MAX_HANDSHAKES_PER_IP,
        accept_queue: int = DEFAULT_ACCEPT_QUEUE,
        prefer_chacha20: Optional[bool] = None,
        logger: Any = None,
        on_handshake: Optional[Callable[[Any], None]] = None,
    ) -> None:
        if isinstance(keys, Key):
            keys = [keys]
        self.keys: List[Key] = list(keys)
        if keyring is not None and not isinstance(keyring, Keyring):
            raise ConfigError("Context keyring is a %s, not an hmacauth.Keyring" % type(keyring).__name__)
        self.keyring = keyring
        self._static_keyset = KeySet(self.keys, "Context keys") if keyring is None else None
        try:
            self.mode = Mode(mode)
        except ValueError:
            raise ConfigError("Context mode is %r; use Mode.AUTH, Mode.INTEGRITY or Mode.SEALED" % (mode,)) from None
        self.forward_secrecy = bool(forward_secrecy)
        self.key_share_lifetime = _seconds(key_share_lifetime, DEFAULT_KEY_SHARE_LIFETIME, "key_share_lifetime")
        self.handshake_timeout = _seconds(handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT, "handshake_timeout")
        for name, v in (("max_handshakes", max_handshakes), ("accept_queue", accept_queue)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(
                    "Context.%s is %r; it must be an int, not negative (zero means the default)" % (name, v)
                )
        if isinstance(max_handshakes_per_ip, bool) or not isinstance(max_handshakes_per_ip, int):
            raise ConfigError(
                "Context.max_handshakes_per_ip is %r; it must be an int (zero means the default, a negative value "
                "no per-IP cap)" % (max_handshakes_per_ip,)
            )
        self.max_handshakes = max_handshakes or DEFAULT_MAX_HANDSHAKES
        self.accept_queue = accept_queue or DEFAULT_ACCEPT_QUEUE
        self.max_handshakes_per_ip = max_handshakes_per_ip or DEFAULT_MAX_HANDSHAKES_PER_IP
        self.prefer_chacha20 = _prefers_chacha() if prefer_chacha20 is None else bool(prefer_chacha20)
        self.logger = logger
        self.on_handshake = on_handshake
        # Fail here, not in every handshake, if what the settings need is missing.
        if not can_run(int(self.mode), self.forward_secrecy):
            raise _cannot_run(int(self.mode), self.forward_secrecy, "this Context asks for", "machine", "Context")
        self._shares = KeyShares()
        self._nonces = ClientNonces()
        # Test-only: a lower key update threshold (bytes per generation).
        self._testing_only_update_bytes: Optional[int] = None
        self._testing_only_rand: Optional[Callable[[int], bytes]] = None
        # Test-only: a shorter bound on close()'s close record (seconds).
        self._testing_only_close_record_timeout: Optional[float] = None

    @property
    def _keyset(self) -> KeySet:
        """The keys a handshake starting now uses."""
        if self.keyring is not None:
            return self.keyring._keyset()
        assert self._static_keyset is not None
        return self._static_keyset

    def __repr__(self) -> str:
        return "hmacauth.Context(key_ids=%r, mode=%s, forward_secrecy=%r, secrets redacted)" % (
            self.keyring.ids() if self.keyring is not None else [k.id for k in self.keys],
            self.mode,
            self.forward_secrecy,
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth.Context is not picklable: it holds secrets")

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, do_handshake_on_connect: bool = True) -> "HmacAuthSocket":
        """Runs the handshake on the connected socket sock (unless
        do_handshake_on_connect is false: then call do_handshake()) and
        returns an HmacAuthSocket that takes over sock. On a failed
        handshake sock is closed and the error raised."""
        from ._socket import HmacAuthSocket

        s = HmacAuthSocket(sock, self, server_side)
        if do_handshake_on_connect:
            s.do_handshake()
        return s
