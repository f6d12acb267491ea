"""The hmacauth/1 handshake and key schedule (PROTOCOL.md sections 4 to 8),
without I/O: the socket and asyncio drivers feed it the messages they read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple, Union

from ._errors import AuthFailed, ConfigError, ExportError, ProtocolError, quote
from ._keys import MAX_KEY_ID_LEN, Key

LABEL = b"hmacauth/1"
MAGIC = b"hmacauth"
VERSION = 1
MSG_CLIENT_HELLO = 1
MSG_SERVER_HELLO = 2
MSG_CLIENT_FINISHED = 3
HEADER_LEN = 10
NONCE_LEN = 32
MAC_LEN = 32
SHARE_LEN = 32
CLIENT_HELLO_LEN = HEADER_LEN + 3 + MAX_KEY_ID_LEN + NONCE_LEN + MAC_LEN  # 141
SERVER_HELLO_LEN = HEADER_LEN + 2 + NONCE_LEN + SHARE_LEN + MAC_LEN  # 108
CLIENT_FINISHED_LEN = 1 + SHARE_LEN + MAC_LEN  # 65

FLAG_FORWARD_SECRECY = 0x01
FLAG_CHACHA20 = 0x02
KNOWN_FLAGS = FLAG_FORWARD_SECRECY | FLAG_CHACHA20
MODE_MAX = 2
MODE_NAMES = {0: "auth", 1: "integrity", 2: "sealed"}
ZERO_SHARE = bytes(SHARE_LEN)

Rand = Callable[[int], bytes]


def mode_name(m: int) -> str:
    return MODE_NAMES.get(m, "Mode(%d)" % m)


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_sha256 = hashlib.sha256


def hmac256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) from two SHA-256 calls. For the handshake's
    short keys and messages this is about twice as fast as hmac.digest (whose
    one-shot OpenSSL HMAC sets up a context per call), and it keeps the GIL:
    hashlib releases it only for 2 KiB or more, hmac.digest on every call,
    which costs a thread switch whenever another thread waits for it."""
    if len(key) > 64:
        key = _sha256(key).digest()
    key = bytes(key).ljust(64, b"\0")
    inner = _sha256(key.translate(_IPAD) + b"".join(parts)).digest()
    return _sha256(key.translate(_OPAD) + inner).digest()


def wipe(b: bytearray) -> None:
    """Overwrites a secret with zeros in place (one copy in C, not a loop
    of Python)."""
    b[:] = bytes(len(b))


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869, 2.3)."""
    if length <= 32:  # one block: every key, IV and secret of the protocol
        return hmac256(prk, info, b"\x01")[:length]
    out = bytearray()
    t = b""
    i = 0
    while len(out) < length:
        i += 1
        t = hmac256(prk, t, info, bytes((i,)))
        out += t
    return bytes(out[:length])


def expand_label(prk: bytes, label: str, length: int) -> bytes:
    return hkdf_expand(prk, LABEL + b" " + label.encode("ascii"), length)


class KeySchedule:
    """The values derived from one key, independent of any connection."""

    __slots__ = ("id", "id_bytes", "k_ch", "k_sh", "k_cf", "k_ses")

    def __init__(self, key: Key) -> None:
        prk = hmac256(LABEL, key.secret)  # HKDF-Extract(salt = label, ikm = secret)
        self.id = key.id
        self.id_bytes = key.id.encode("ascii")
        self.k_ch = expand_label(prk, "client hello", 32)
        self.k_sh = expand_label(prk, "server finished", 32)
        self.k_cf = expand_label(prk, "client finished", 32)
        self.k_ses = expand_label(prk, "session", 32)

    def __repr__(self) -> str:
        return "KeySchedule(id=%r, secrets redacted)" % self.id

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth's KeySchedule is not picklable: it holds keys derived from a secret")


class KeySet:
    """A validated list of keys with their schedules."""

    def __init__(self, keys: Iterable[Key], source: str = "Context keys") -> None:
        keys = list(keys)
        if not keys:
            raise ConfigError("%s is empty; add at least one key" % source)
        self.by_id: Dict[str, KeySchedule] = {}
        self.first: Optional[KeySchedule] = None
        for k in keys:
            if not isinstance(k, Key):
                raise ConfigError("%s holds a %s, not an hmacauth.Key" % (source, type(k).__name__))
            k.validate()
            if k.id in self.by_id:
                raise ConfigError("key ID %s appears twice in %s" % (quote(k.id), source))
            s = KeySchedule(k)
            self.by_id[k.id] = s
            if self.first is None:
                self.first = s

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth's KeySet is not picklable: it holds keys derived from secrets")


def check_header(b: bytes, want: int, name: str) -> None:
    """Checks the start of a message as far as it goes, so that a peer is
    refused at its first byte that no header has."""
    n = min(len(b), len(MAGIC))
    if bytes(b[:n]) != MAGIC[:n]:
        raise ProtocolError("expected a %s, got %s: the peer does not speak hmacauth" % (name, quote(bytes(b))))
    if len(b) > len(MAGIC) and b[len(MAGIC)] != VERSION:
        raise ProtocolError(
            "the peer speaks hmacauth version %d, this side speaks version %d; upgrade the older side"
            % (b[len(MAGIC)], VERSION)
        )
    if len(b) > len(MAGIC) + 1 and b[len(MAGIC) + 1] != want:
        raise ProtocolError("expected a %s (message type %d), got message type %d" % (name, want, b[len(MAGIC) + 1]))


# X25519 comes from the 'cryptography' package, imported only when a
# handshake uses forward secrecy.
def _x25519() -> Tuple[Any, Any, Any, Any]:
    try:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:
        raise ConfigError(
            "forward secrecy needs the 'cryptography' package (X25519), which is not installed; "
            "run pip install cryptography, or use a Context without forward_secrecy"
        ) from None
    return X25519PrivateKey, X25519PublicKey, Encoding, PublicFormat


def can_run(mode: int, fs: bool) -> bool:
    """Whether this process has what mode and forward secrecy need (the
    'cryptography' package for any mode but ModeAuth and for X25519). A
    server checks it before its ServerHello, a client before its
    ClientFinished: a side that agreed to what it cannot run would leave
    its peer believing the handshake succeeded."""
    try:
        if mode != 0:
            from ._record import aead_classes  # here: _record imports this module

            aead_classes()
        if fs:
            _x25519()
    except ConfigError:
        return False
    return True


def _cannot_run(mode: int, fs: bool, asked: str, here: str, other: str) -> ConfigError:
    return ConfigError(
        "%s %s%s, which needs the 'cryptography' package, not installed on this %s: install it "
        "(pip install cryptography), or configure the %s for ModeAuth without forward secrecy"
        % (asked, mode_name(mode), " with forward secrecy" if fs else "", here, other)
    )


class KeyPair:
    """An X25519 key pair."""

    __slots__ = ("priv", "public")

    def __init__(self, seed: bytes) -> None:
        priv_cls, _, enc, fmt = _x25519()
        self.priv = priv_cls.from_private_bytes(seed)
        self.public = self.priv.public_key().public_bytes(enc.Raw, fmt.Raw)

    def exchange(self, peer: bytes) -> bytes:
        _, pub_cls, _, _ = _x25519()
        try:
            dh = self.priv.exchange(pub_cls.from_public_bytes(bytes(peer)))
        except ValueError:
            raise ProtocolError("X25519 share is a low-order point") from None
        if dh == bytes(32):
            raise ProtocolError("X25519 share is a low-order point")
        return bytes(dh)


# Every KeyShare, KeyShares and ClientNonces alive in this process (and the
# socketserver mix-in's table of connections, in _server), so that
# the child of an os.fork (a pre-fork server, multiprocessing's "fork" start
# method) starts with none of its parent's key pairs, X25519 results and
# client nonces, and with fresh locks: a lock that another thread of the
# parent held at the fork would stay locked in the child for ever. Module
# level because fork is process-wide; only constructors and the fork hook
# touch it.
_live: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for obj in list(_live):
        obj._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


# The X25519 results one shared key pair remembers, as the Go package's
# maxCachedSecrets: a server with more distinct client shares at once
# computes the rest anew.
MAX_CACHED_SECRETS = 256


class KeyShare:
    """A key pair that a KeyShares hands to the handshakes of one lifetime,
    with the X25519 results computed with it, by peer share: a peer that
    reuses its key pair too costs one exchange per pair of key pairs, not
    one per handshake. Used by threads and event loops at once."""

    __slots__ = ("pair", "public", "_lock", "_secrets", "__weakref__")

    def __init__(self, pair: KeyPair) -> None:
        self.pair = pair
        self.public = pair.public
        self._lock = threading.Lock()
        # None once dropped: handshakes that still hold the key pair finish
        # with it and remember nothing.
        self._secrets: Optional[Dict[bytes, bytes]] = {}
        _live.add(self)

    def exchange(self, peer: bytes) -> bytes:
        peer = bytes(peer)
        with self._lock:
            dh = self._secrets.get(peer) if self._secrets is not None else None
        if dh is not None:
            return dh
        dh = self.pair.exchange(peer)  # raises for a low-order point: nothing is remembered
        with self._lock:
            if self._secrets is not None and len(self._secrets) < MAX_CACHED_SECRETS:
                self._secrets[peer] = dh
        return dh

    def drop(self) -> None:
        """Forgets the results computed with this key pair."""
        with self._lock:
            if self._secrets is not None:
                self._secrets.clear()
                self._secrets = None

    def _after_fork(self) -> None:
        # The parent's threads may have held the lock: it is replaced, not taken.
        self._lock = threading.Lock()
        if self._secrets is not None:
            self._secrets.clear()
            self._secrets = None


class KeyShares:
    """One X25519 key pair reused by a Context's handshakes for a lifetime,
    with the results computed with it (PROTOCOL.md 7.3). A timer drops both
    when the lifetime ends, whether or not a handshake comes to replace
    them; a handshake that took the key pair keeps it until it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._share: Optional[KeyShare] = None
        self._expires = 0.0
        self._timer: Optional[threading.Timer] = None
        _live.add(self)

    def get(self, lifetime: float) -> KeyShare:
        now = time.monotonic()
        with self._lock:
            share = self._share
            if share is not None and now < self._expires:
                return share
            if share is not None:  # its timer is late
                share.drop()
            share = KeyShare(KeyPair(secrets.token_bytes(32)))
            self._share, self._expires = share, now + lifetime
            self._timer = None
            if lifetime < threading.TIMEOUT_MAX:
                timer = threading.Timer(lifetime, self._expire, (share,))
                timer.daemon = True
                try:
                    timer.start()
                    self._timer = timer
                except RuntimeError:  # no new threads at interpreter shutdown: dropped at the next get
                    pass
            return share

    def _expire(self, share: KeyShare) -> None:
        with self._lock:
            if self._share is share:
                self._share = None
        share.drop()

    def _after_fork(self) -> None:
        # The timer thread did not survive the fork and the key pair is the
        # parent's (shared with every sibling): forget it; the next handshake
        # makes the child's own. The lock is replaced, not taken.
        self._lock = threading.Lock()
        self._share, self._expires, self._timer = None, 0.0, None


class ClientNonces:
    """The client nonces of a Context's client handshakes in flight: a server
    handshake of the same Context refuses a ClientHello that carries one (a
    connection this process dialed, sent back to it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set: Set[bytes] = set()
        _live.add(self)

    def add(self, n: bytes) -> None:
        with self._lock:
            self._set.add(n)

    def discard(self, n: bytes) -> None:
        with self._lock:
            self._set.discard(n)

    def __contains__(self, n: object) -> bool:
        with self._lock:
            return n in self._set

    def claim(self, n: bytes) -> bool:
        """Adds n and reports whether it was absent."""
        with self._lock:
            if n in self._set:
                return False
            self._set.add(n)
            return True

    def _after_fork(self) -> None:
        # The nonces are those of the parent's handshakes, which do not run
        # in the child; the lock is replaced, not taken.
        self._lock = threading.Lock()
        self._set = set()


# The client nonces of the server handshakes in flight in this process
# (PROTOCOL.md 7.2, step 3): a ClientHello is sent once, so a second one with
# the nonce of a handshake still running is a replay, whichever server of the
# process it reaches. Process-wide, as the Go implementation's serverNonces.
_server_nonces = ClientNonces()


class Result:
    """What a successful handshake established."""

    __slots__ = ("key_id", "mode", "flags", "secret")

    def __init__(self, key_id: str, mode: int, flags: int, secret: bytes) -> None:
        self.key_id = key_id
        self.mode = mode
        self.flags = flags
        self.secret = bytearray(secret)

    def __repr__(self) -> str:
        return "Result(key_id=%r, mode=%d, flags=%d, secret redacted)" % (self.key_id, self.mode, self.flags)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth's handshake Result is not picklable: it holds the session secret")


def session_secret(ks: KeySchedule, transcript: bytes, dh: bytes) -> bytes:
    th = hashlib.sha256(transcript).digest()
    return hmac256(th, ks.k_ses, dh)  # HKDF-Extract(salt = TH, ikm = K_ses || DH)


def export(secret: Optional[bytes], label: bytes, context: Optional[bytes], length: int) -> bytes:
    """The exporter of PROTOCOL.md section 8."""
    if secret is None:
        raise ExportError("export_keying_material before a successful handshake")
    if context is None:
        context = b""
    label, context = bytes(label), bytes(context)
    if len(label) > 0xFFFF or len(context) > 0xFFFF or not 0 <= length <= 255 * 32:
        raise ExportError(
            "label of %d bytes, context of %d bytes, length %d: label and context must be under 64 KiB and length 0 to %d"
            % (len(label), len(context), length, 255 * 32)
        )
    e = expand_label(bytes(secret), "exporter", 32)
    info = len(label).to_bytes(2, "big") + label + len(context).to_bytes(2, "big") + context
    return hkdf_expand(e, info, length)


def _random(n: int) -> bytes:
    return secrets.token_bytes(n)


class ClientHandshake:
    """The client side: client_hello(), then server_hello(sh) returns the
    ClientFinished to send; result holds what was established."""

    def __init__(
        self,
        ks: KeySchedule,
        mode: int,
        fs: bool,
        chacha: bool,
        rand: Rand = _random,
        shares: Optional[KeyShares] = None,
        share_lifetime: float = 0.0,
    ) -> None:
        self.ks = ks
        self.mode = mode
        self.fs = fs
        self.chacha = chacha
        self.rand = rand
        self.shares = shares
        self.share_lifetime = share_lifetime
        self.ch = b""
        self.nonce = b""
        self.result: Optional[Result] = None

    def client_hello(self) -> bytes:
        ks = self.ks
        flags = (FLAG_FORWARD_SECRECY if self.fs else 0) | (FLAG_CHACHA20 if self.chacha else 0)
        self.nonce = bytes(self.rand(NONCE_LEN))
        body = (
            MAGIC
            + bytes((VERSION, MSG_CLIENT_HELLO, self.mode, flags, len(ks.id_bytes)))
            + ks.id_bytes
            + bytes(MAX_KEY_ID_LEN - len(ks.id_bytes))
            + self.nonce
        )
        self.ch = body + hmac256(ks.k_ch, body)
        return self.ch

    def server_hello(self, sh: bytes) -> bytes:
        sh = bytes(sh)
        ks = self.ks
        if len(sh) != SERVER_HELLO_LEN:
            raise ProtocolError("ServerHello has %d bytes, want %d" % (len(sh), SERVER_HELLO_LEN))
        check_header(sh, MSG_SERVER_HELLO, "ServerHello")
        mode, flags = sh[10], sh[11]
        share = sh[44:76]
        if not hmac.compare_digest(hmac256(ks.k_sh, self.ch, sh[:76]), sh[76:]):
            raise AuthFailed(
                "the server did not prove key %s: it holds a different secret for that ID, or it is not the server you meant"
                % quote(ks.id)
            )
        if flags & ~KNOWN_FLAGS & 0xFF:
            raise ProtocolError("ServerHello sets unknown flags 0x%02x" % (flags & ~KNOWN_FLAGS & 0xFF))
        if mode > MODE_MAX:
            raise ProtocolError(
                "server chose mode %d, which this client does not know (it knows modes 0 to %d): the server is newer than this client, or broken"
                % (mode, MODE_MAX)
            )
        if mode < self.mode:
            raise ProtocolError(
                "server chose %s, but this client asked for at least %s" % (mode_name(mode), mode_name(self.mode))
            )
        if self.fs and not flags & FLAG_FORWARD_SECRECY:
            raise ProtocolError("server did not agree to forward secrecy, which this client asked for")
        if self.chacha and not flags & FLAG_CHACHA20:
            raise ProtocolError(
                "server chose AES-256-GCM records, but this client has no AES hardware and asked for ChaCha20-Poly1305"
            )
        if not flags & FLAG_FORWARD_SECRECY and share != ZERO_SHARE:
            raise ProtocolError("ServerHello carries a key share without forward secrecy")
        if not can_run(mode, bool(flags & FLAG_FORWARD_SECRECY)):
            raise _cannot_run(mode, bool(flags & FLAG_FORWARD_SECRECY), "the server chose", "client", "server")
        dh = b""
        my_share = ZERO_SHARE
        if flags & FLAG_FORWARD_SECRECY:
            pair: Union[KeyPair, KeyShare]
            if self.shares is not None:
                pair = self.shares.get(self.share_lifetime)
            else:
                pair = KeyPair(self.rand(32))
            my_share = pair.public
            dh = pair.exchange(share)
        body = bytes((MSG_CLIENT_FINISHED,)) + my_share
        cf = body + hmac256(ks.k_cf, self.ch, sh, body)
        self.result = Result(ks.id, mode, flags, session_secret(ks, self.ch + sh + cf, dh))
        return cf


class ServerHandshake:
    """The server side: client_hello(ch) returns the ServerHello to send,
    client_finished(cf) completes; key_id holds the ID the client named."""

    def __init__(
        self,
        keys: KeySet,
        mode: int,
        fs: bool,
        chacha: bool,
        rand: Rand = _random,
        shares: Optional[KeyShares] = None,
        share_lifetime: float = 0.0,
        nonces: Optional[ClientNonces] = None,
    ) -> None:
        self.keys = keys
        self.mode = mode
        self.fs = fs
        self.chacha = chacha
        self.rand = rand
        self.shares = shares
        self.share_lifetime = share_lifetime
        self.nonces = nonces
        self.key_id = ""
        self.ks: Optional[KeySchedule] = None
        self.ch = b""
        self.sh = b""
        self.flags = 0
        self.chosen_mode = 0
        self.pair: Optional[Union[KeyPair, KeyShare]] = None
        self.result: Optional[Result] = None
        self._claimed = b""

    def release(self) -> None:
        """Ends this handshake's claim on its client nonce (call it when the
        handshake ends, whichever way)."""
        if self._claimed:
            _server_nonces.discard(self._claimed)
            self._claimed = b""

    def client_hello(self, ch: bytes) -> bytes:
        ch = bytes(ch)
        if len(ch) != CLIENT_HELLO_LEN:
            raise ProtocolError("ClientHello has %d bytes, want %d" % (len(ch), CLIENT_HELLO_LEN))
        check_header(ch, MSG_CLIENT_HELLO, "ClientHello")
        cmode, cflags, n = ch[10], ch[11], ch[12]
        id_field = ch[13 : 13 + MAX_KEY_ID_LEN]
        if not 1 <= n <= MAX_KEY_ID_LEN:
            raise ProtocolError("ClientHello key ID length is %d, want 1 to %d" % (n, MAX_KEY_ID_LEN))
        if any(id_field[n:]):
            raise ProtocolError("ClientHello key ID padding is not zero")
        raw_id = id_field[:n]
        if not all(0x21 <= c <= 0x7E for c in raw_id):
            raise ProtocolError("ClientHello names an invalid key ID %s" % quote(raw_id))
        key_id = raw_id.decode("ascii")
        self.key_id = key_id
        nonce = ch[77:109]
        if cmode > MODE_MAX:
            raise ProtocolError("client asks for mode %d, which this server does not know" % cmode)
        # The MAC is computed for an unknown key ID too, with another key,
        # so that the time to refuse does not tell which IDs exist.
        # The key is not kept in a local of this frame, which the traceback
        # of the AuthFailed below holds (and error reporters record).
        ks = self.keys.by_id.get(key_id)
        mac_ks = ks if ks is not None else self.keys.first
        assert mac_ks is not None
        ok = hmac.compare_digest(hmac256(mac_ks.k_ch, ch[:109]), ch[109:])
        if ks is None:
            raise AuthFailed("client names key ID %s, which this server does not have" % quote(key_id))
        if not ok:
            raise AuthFailed(
                "client's ClientHello MAC for key ID %s is wrong: it holds a different secret" % quote(key_id)
            )
        if self.nonces is not None and nonce in self.nonces:
            raise AuthFailed(
                "the ClientHello for key ID %s is one this Context's own client sent, in a handshake still in flight: "
                "a connection this process dialed was sent back to it (reflection); a client and a server in one "
                "process that mean to connect need a Context each" % quote(key_id)
            )
        mode = max(cmode, self.mode)
        fs = bool(cflags & FLAG_FORWARD_SECRECY) or self.fs
        if not can_run(mode, fs):
            raise _cannot_run(mode, fs, "the client asks for", "server", "client")
        # Refused before any work that a replay would make the server do or
        # hold (a ServerHello, a handshake slot waiting for a ClientFinished).
        if not _server_nonces.claim(nonce):
            raise AuthFailed(
                "the ClientHello for key ID %s carries the client nonce of a handshake still in flight: a replay of a "
                "recorded ClientHello" % quote(key_id)
            )
        self._claimed = nonce
        self.ks = ks
        self.ch = ch
        flags = FLAG_FORWARD_SECRECY if fs else 0
        if cflags & FLAG_CHACHA20 or self.chacha:
            flags |= FLAG_CHACHA20
        ns = bytes(self.rand(NONCE_LEN))
        share = ZERO_SHARE
        if flags & FLAG_FORWARD_SECRECY:
            pair: Union[KeyPair, KeyShare]
            if self.shares is not None:
                pair = self.shares.get(self.share_lifetime)
            else:
                pair = KeyPair(self.rand(32))
            self.pair = pair
            share = pair.public
        body = MAGIC + bytes((VERSION, MSG_SERVER_HELLO, mode, flags)) + ns + share
        self.sh = body + hmac256(ks.k_sh, ch, body)
        self.chosen_mode, self.flags = mode, flags
        return self.sh

    def client_finished(self, cf: bytes) -> Result:
        cf = bytes(cf)
        ks = self.ks
        assert ks is not None
        if len(cf) != CLIENT_FINISHED_LEN:
            raise ProtocolError("ClientFinished has %d bytes, want %d" % (len(cf), CLIENT_FINISHED_LEN))
        if cf[0] != MSG_CLIENT_FINISHED:
            raise ProtocolError(
                "expected a ClientFinished (message type %d), got %s" % (MSG_CLIENT_FINISHED, quote(cf[:1]))
            )
        if not hmac.compare_digest(hmac256(ks.k_cf, self.ch, self.sh, cf[:33]), cf[33:]):
            raise AuthFailed("client's proof for key ID %s is wrong (a replayed ClientHello?)" % quote(ks.id))
        share = cf[1:33]
        dh = b""
        if not self.flags & FLAG_FORWARD_SECRECY:
            if share != ZERO_SHARE:
                raise ProtocolError("ClientFinished carries a key share without forward secrecy")
        else:
            assert self.pair is not None
            dh = self.pair.exchange(share)
            self.pair = None
        self.result = Result(ks.id, self.chosen_mode, self.flags, session_secret(ks, self.ch + self.sh + cf, dh))
        return self.result
