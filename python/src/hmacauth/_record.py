"""The record layer of ModeIntegrity and ModeSealed (PROTOCOL.md section 9),
without I/O: a Sealer turns payloads into record bytes, an Opener checks
and opens records.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ._errors import ConfigError, IntegrityError, ProtocolError
from ._handshake import FLAG_CHACHA20, expand_label

MAX_PAYLOAD = 262144  # 256 KiB, the protocol maximum
HEADER = 4
TAG = 16
OVERHEAD = HEADER + TAG
MAX_RECORD = HEADER + MAX_PAYLOAD + TAG

REC_DATA = 1
REC_CLOSE = 2
REC_KEY_UPDATE = 3

MAX_USELESS_RECORDS = 16
UPDATE_BYTES = 1 << 36
UPDATE_RECORDS = 1 << 48

MODE_INTEGRITY = 1
MODE_SEALED = 2

_aeads: Optional[Tuple[Any, Any, Any, bool]] = None


def aead_classes() -> Tuple[Any, Any, Any, bool]:
    """AESGCM, ChaCha20Poly1305, InvalidTag from 'cryptography', imported on
    first use, and whether they take memoryviews (cryptography 39 and later)
    rather than bytes only."""
    global _aeads
    if _aeads is None:
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
        except ImportError:
            raise ConfigError(
                "ModeIntegrity and ModeSealed need the 'cryptography' package (AES-256-GCM, ChaCha20-Poly1305), "
                "which is not installed; run pip install cryptography, or use ModeAuth"
            ) from None
        try:
            AESGCM(bytes(32)).encrypt(bytes(12), memoryview(b"x"), memoryview(b""))
            buffers = True
        except TypeError:
            buffers = False
        _aeads = (AESGCM, ChaCha20Poly1305, InvalidTag, buffers)
    return _aeads


class Direction:
    """The traffic secret chain of one direction and its current AEAD."""

    __slots__ = ("secret", "chacha", "aead", "iv", "seq", "used", "generation")

    def __init__(self, secret: bytes, flags: int) -> None:
        self.secret = bytearray(secret)
        self.chacha = bool(flags & FLAG_CHACHA20)
        self.generation = 0
        self._derive()

    def _derive(self) -> None:
        aes, chacha, _, _ = aead_classes()
        t = bytes(self.secret)
        self.aead = (chacha if self.chacha else aes)(expand_label(t, "key", 32))
        self.iv = int.from_bytes(expand_label(t, "iv", 12), "big")
        self.seq = 0
        self.used = 0

    def nonce(self) -> bytes:
        return (self.iv ^ self.seq).to_bytes(12, "big")

    def update(self) -> None:
        nxt = expand_label(bytes(self.secret), "traffic update", 32)
        self.secret[:] = nxt
        self.generation += 1
        self._derive()

    def clear(self) -> None:
        for i in range(len(self.secret)):
            self.secret[i] = 0
        self.aead = None
        self.iv = 0


def traffic_secrets(session_secret: bytes) -> Tuple[bytes, bytes]:
    """T_c2s[0] and T_s2c[0]."""
    s = bytes(session_secret)
    return expand_label(s, "c2s traffic", 32), expand_label(s, "s2c traffic", 32)


class Sealer:
    """The sending side: seal() returns the buffers of a record, preceded by
    a key update record when the generation is used up."""

    def __init__(self, mode: int, d: Direction, update_bytes: int = UPDATE_BYTES, update_records: int = UPDATE_RECORDS) -> None:
        self.mode = mode
        self.d = d
        self.update_bytes = update_bytes
        self.update_records = update_records
        self.buffers = aead_classes()[3]

    def _one(self, typ: int, payload: Any, out: List[Any]) -> None:
        d = self.d
        n = len(payload)
        header = bytes((typ,)) + n.to_bytes(3, "big")
        nonce = d.nonce()
        if not self.buffers and not isinstance(payload, bytes):
            payload = bytes(payload)
        if self.mode == MODE_SEALED:
            out.append(header)
            out.append(d.aead.encrypt(nonce, payload, header))
        else:
            out.append(header)
            if n:
                out.append(payload)
            out.append(d.aead.encrypt(nonce, b"", header + bytes(payload) if n else header))
        d.seq += 1
        d.used += n

    def seal(self, typ: int, payload: Any = b"") -> List[Any]:
        out: List[Any] = []
        d = self.d
        if d.used >= self.update_bytes or d.seq >= self.update_records:
            self._one(REC_KEY_UPDATE, b"", out)
            d.update()
        self._one(typ, payload, out)
        return out


class Opener:
    """The receiving side: open() checks one whole record and returns its
    type and payload."""

    def __init__(self, mode: int, d: Direction, peer: str, addr: str = "") -> None:
        self.mode = mode
        self.d = d
        self.peer = peer  # "server" or "client", for messages
        self.addr = addr
        self.useless = 0
        aes, chacha, self.invalid_tag, self.buffers = aead_classes()

    def integrity(self, what: str) -> IntegrityError:
        return IntegrityError("from the %s at %s: %s; the connection is no longer usable" % (self.peer, self.addr, what))

    def check_length(self, n: int) -> None:
        if n > MAX_PAYLOAD:
            raise self.integrity("a record header announces %d payload bytes, more than the %d allowed" % (n, MAX_PAYLOAD))

    def open(self, rec: memoryview) -> Tuple[int, Any]:
        """rec holds exactly one record. Returns (type, payload); the payload
        of a data record is bytes or a memoryview of a bytes object."""
        d = self.d
        typ = rec[0]
        n = int.from_bytes(rec[1:4], "big")
        nonce = d.nonce()
        try:
            if self.mode == MODE_SEALED:
                if self.buffers:
                    payload: Any = d.aead.decrypt(nonce, rec[HEADER:], rec[:HEADER])
                else:
                    payload = d.aead.decrypt(nonce, bytes(rec[HEADER:]), bytes(rec[:HEADER]))
            else:
                ad = bytes(rec[: HEADER + n])
                d.aead.decrypt(nonce, rec[HEADER + n :] if self.buffers else bytes(rec[HEADER + n :]), ad)
                payload = memoryview(ad)[HEADER:]
        except self.invalid_tag:
            raise self.integrity(
                "record %d (generation %d) failed authentication: it was altered, dropped, reordered, replayed, reflected or injected in transit"
                % (d.seq, d.generation)
            ) from None
        d.seq += 1
        if typ == REC_DATA:
            if n == 0:
                self._useless()
            else:
                self.useless = 0
            return typ, payload
        if typ == REC_CLOSE:
            if n:
                raise ProtocolError("the %s sent a close record with a payload" % self.peer)
            return typ, b""
        if typ == REC_KEY_UPDATE:
            if n:
                raise ProtocolError("the %s sent a key update record with a payload" % self.peer)
            self._useless()
            d.update()
            return typ, b""
        raise ProtocolError("the %s sent a record of unknown type %d" % (self.peer, typ))

    def _useless(self) -> None:
        self.useless += 1
        if self.useless > MAX_USELESS_RECORDS:
            raise ProtocolError(
                "the %s sent more than %d records in a row without application data (empty data records or key updates)"
                % (self.peer, MAX_USELESS_RECORDS)
            )
