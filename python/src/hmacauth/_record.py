"""The record layer of ModeIntegrity and ModeSealed (PROTOCOL.md section 9),
without I/O: a Sealer turns payloads into record bytes, an Opener checks
and opens records.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ._errors import ConfigError, HmacAuthError, IntegrityError, ProtocolError
from ._handshake import FLAG_CHACHA20, LABEL, expand_label, hkdf_expand, wipe

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


# Below this many payload bytes the one-shot AEAD calls are cheaper than the
# Cipher API's, whose setup costs more than copying a small record.
SMALL = 8192


class RecordCipher:
    """One traffic key's AEAD, used through the cheapest calls the installed
    'cryptography' offers: encrypt_into and decrypt_into where it has them
    (43 and later); else, for AES-256-GCM, the Cipher API's update_into,
    which takes memoryviews and writes into a buffer (the one-shot AESGCM
    of older versions copies and allocates its input and output); else the
    one-shot calls."""

    __slots__ = ("kind", "aead", "alg", "gcm", "buffers", "invalid_tag")

    def __init__(self, key: bytes, chacha: bool) -> None:
        aes, chacha_cls, self.invalid_tag, self.buffers = aead_classes()
        cls = chacha_cls if chacha else aes
        self.aead = cls(key)
        self.alg: Any = None
        if hasattr(cls, "encrypt_into") and hasattr(cls, "decrypt_into"):
            self.kind = "into"
        elif not chacha:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            self.kind = "gcm"
            self.alg = algorithms.AES(key)
            self.gcm = (Cipher, modes.GCM)
        else:
            self.kind = "plain"

    def _gcm(self, nonce: bytes, tag: Optional[bytes] = None) -> Any:
        cipher, gcm = self.gcm
        c = cipher(self.alg, gcm(nonce, tag))
        return c.decryptor() if tag is not None else c.encryptor()

    def seal_sealed(self, nonce: bytes, header: bytes, payload: Any, out: Optional[memoryview]) -> List[Any]:
        n = len(payload)
        if self.kind == "plain" or (self.kind == "gcm" and n < SMALL):
            if not self.buffers and not isinstance(payload, bytes):
                payload = bytes(payload)
            return [header, self.aead.encrypt(nonce, payload, header)]
        if out is None:
            out = memoryview(bytearray(HEADER + n + TAG + 15))
        out[:HEADER] = header
        if self.kind == "into":
            self.aead.encrypt_into(nonce, payload, header, out[HEADER : HEADER + n + TAG])
        else:
            e = self._gcm(nonce)
            e.authenticate_additional_data(header)
            if n:
                e.update_into(payload, out[HEADER:])
            e.finalize()
            out[HEADER + n : HEADER + n + TAG] = e.tag
        return [out[: HEADER + n + TAG]]

    def seal_integrity(self, nonce: bytes, header: bytes, payload: Any, out: Optional[memoryview]) -> List[Any]:
        n = len(payload)
        if self.kind == "gcm" and n >= SMALL:
            e = self._gcm(nonce)
            e.authenticate_additional_data(header)
            if n:
                e.authenticate_additional_data(payload)
            e.finalize()
            return [header, payload, e.tag] if n else [header, e.tag]
        if self.kind == "into" or (self.buffers and n >= SMALL):
            if out is None:
                out = memoryview(bytearray(HEADER + n))
            out[:HEADER] = header
            out[HEADER : HEADER + n] = payload
            return [out[: HEADER + n], self.aead.encrypt(nonce, b"", out[: HEADER + n])]
        return [header, payload, self.aead.encrypt(nonce, b"", header + bytes(payload))]

    def open_sealed(
        self, nonce: bytes, rec: memoryview, n: int, scratch: memoryview, out: Optional[memoryview]
    ) -> Tuple[memoryview, bool]:
        """Decrypts into out if it is large enough, else into scratch;
        returns the plaintext's view and whether it is in out. Raises
        invalid_tag, leaving no plaintext behind."""
        if self.kind == "plain" or (self.kind == "gcm" and n < SMALL):
            if self.buffers:
                pt = self.aead.decrypt(nonce, rec[HEADER:], rec[:HEADER])
            else:
                pt = self.aead.decrypt(nonce, bytes(rec[HEADER:]), bytes(rec[:HEADER]))
            return memoryview(pt), False
        if self.kind == "into":
            into = out is not None and len(out) >= n
            dst = out[:n] if out is not None and into else scratch[:n]
            try:
                self.aead.decrypt_into(nonce, rec[HEADER:], rec[:HEADER], dst)
            except self.invalid_tag:
                dst[:] = bytes(n)
                raise
            return dst, into
        into = out is not None and len(out) >= n + 15
        dst = out if out is not None and into else scratch
        d = self._gcm(nonce, bytes(rec[HEADER + n :]))
        d.authenticate_additional_data(rec[:HEADER])
        if n:
            d.update_into(rec[HEADER : HEADER + n], dst)
        try:
            d.finalize()
        except self.invalid_tag:
            dst[:n] = bytes(n)
            raise
        return dst[:n], into

    def open_integrity(self, nonce: bytes, rec: memoryview, n: int) -> memoryview:
        """Checks the tag; returns the payload's view into rec."""
        if self.kind == "gcm" and n >= SMALL:
            d = self._gcm(nonce, bytes(rec[HEADER + n :]))
            d.authenticate_additional_data(rec[: HEADER + n])
            d.finalize()
        elif self.buffers:
            self.aead.decrypt(nonce, rec[HEADER + n :], rec[: HEADER + n])
        else:
            self.aead.decrypt(nonce, bytes(rec[HEADER + n :]), bytes(rec[: HEADER + n]))
        return rec[HEADER : HEADER + n]


# The HKDF-Expand-Label infos of the labels every connection derives
# (PROTOCOL.md 9.1), made once: expand_label's for these, without its work.
_INFO_KEY, _INFO_IV, _INFO_C2S, _INFO_S2C = (LABEL + b" " + s for s in (b"key", b"iv", b"c2s traffic", b"s2c traffic"))


class Direction:
    """The traffic secret chain of one direction and its current AEAD."""

    __slots__ = ("secret", "chacha", "aead", "iv", "seq", "used", "generation")

    def __init__(self, secret: bytes, flags: int) -> None:
        self.secret = bytearray(secret)
        self.chacha = bool(flags & FLAG_CHACHA20)
        self.generation = 0
        try:
            self._derive()
        except BaseException:
            self.clear()
            raise

    def _derive(self) -> None:
        t = bytes(self.secret)
        self.aead: Any = RecordCipher(hkdf_expand(t, _INFO_KEY, 32), self.chacha)
        self.iv = int.from_bytes(hkdf_expand(t, _INFO_IV, 12), "big")
        self.seq = 0
        self.used = 0

    def nonce(self) -> bytes:
        return (self.iv ^ self.seq).to_bytes(12, "big")

    def update(self) -> None:
        nxt = expand_label(bytes(self.secret), "traffic update", 32)
        self.secret[:] = nxt
        self.generation += 1
        self._derive()

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth's record Direction is not picklable: it holds a traffic secret")

    def clear(self) -> None:
        wipe(self.secret)
        self.aead = None
        self.iv = 0


def traffic_secrets(session_secret: bytes) -> Tuple[bytes, bytes]:
    """T_c2s[0] and T_s2c[0]."""
    s = bytes(session_secret)
    return hkdf_expand(s, _INFO_C2S, 32), hkdf_expand(s, _INFO_S2C, 32)


def record_layer(
    session_secret: bytearray,
    mode: int,
    flags: int,
    server: bool,
    addr: str,
    update_bytes: Optional[int],
    reuse: bool,
) -> "Tuple[Optional[Sealer], Optional[Opener], Optional[BaseException]]":
    """The Sealer and Opener of a connection (the socket's and asyncio's),
    or the error to raise if they cannot be set up. That error comes without
    its traceback, whose frames held the traffic secrets, and is raised by
    the caller once this frame is gone (as _keys.parse_keys does): error
    reporters such as Sentry and pytest --showlocals record frame locals.
    On an error the session secret is zeroed too: the connection is dead."""
    sealer: Optional[Sealer] = None
    try:
        c2s, s2c = traffic_secrets(session_secret)
        send, recv = (s2c, c2s) if server else (c2s, s2c)
        sealer = Sealer(mode, Direction(send, flags), reuse=reuse)
        if update_bytes is not None:
            sealer.update_bytes = update_bytes
        opener = Opener(mode, Direction(recv, flags), "client" if server else "server", addr)
        return sealer, opener, None
    except BaseException as e:
        if sealer is not None:
            sealer.d.clear()
        wipe(session_secret)
        err: BaseException = e.with_traceback(None)
        if isinstance(e, Exception) and not isinstance(e, HmacAuthError):
            # A failure of 'cryptography' (an unsupported algorithm): a
            # ConfigError, which ends the handshake as any refusal does.
            err = ConfigError(
                "the record layer could not be set up (%s: %s); check the 'cryptography' package"
                % (type(e).__name__, e)
            )
            err.__cause__ = e
        return None, None, err


class Sealer:
    """The sending side: seal() returns the buffers of a record, preceded by
    a key update record when the generation is used up. With reuse (the
    blocking socket), the buffers of the last record are views of one
    buffer that the next seal() overwrites: send them first."""

    def __init__(
        self,
        mode: int,
        d: Direction,
        update_bytes: int = UPDATE_BYTES,
        update_records: int = UPDATE_RECORDS,
        reuse: bool = True,
    ) -> None:
        self.mode = mode
        self.d = d
        self.update_bytes = update_bytes
        self.update_records = update_records
        self._out: Optional[memoryview] = None
        self.reuse = reuse

    def _buffer(self, n: int) -> Optional[memoryview]:
        if not self.reuse:
            return None
        if self._out is None or len(self._out) < HEADER + n + TAG + 15:
            self._out = memoryview(bytearray(max(HEADER + n + TAG + 15, 4096 if n < 4096 else MAX_RECORD + 15)))
        return self._out

    def _one(self, typ: int, payload: Any, out: List[Any], own: bool) -> None:
        d = self.d
        n = len(payload)
        header = bytes((typ,)) + n.to_bytes(3, "big")
        nonce = d.nonce()
        buf = self._buffer(n) if own else None
        if self.mode == MODE_SEALED:
            out.extend(d.aead.seal_sealed(nonce, header, payload, buf))
        else:
            out.extend(d.aead.seal_integrity(nonce, header, payload, buf))
        d.seq += 1
        d.used += n

    def seal(self, typ: int, payload: Any = b"") -> List[Any]:
        out: List[Any] = []
        d = self.d
        if d.used >= self.update_bytes or d.seq >= self.update_records:
            self._one(REC_KEY_UPDATE, b"", out, False)
            d.update()
        self._one(typ, payload, out, True)
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
        self.invalid_tag = aead_classes()[2]
        self._scratch: Optional[memoryview] = None
        self.into_out = False  # whether the last payload open() returned is in its out

    def integrity(self, what: str) -> IntegrityError:
        return IntegrityError("from the %s at %s: %s; the connection is no longer usable" % (self.peer, self.addr, what))

    def check_length(self, n: int) -> None:
        if n > MAX_PAYLOAD:
            raise self.integrity("a record header announces %d payload bytes, more than the %d allowed" % (n, MAX_PAYLOAD))

    def open(self, rec: memoryview, out: Optional[memoryview] = None) -> Tuple[int, Any]:
        """rec holds exactly one record. Returns (type, payload): a
        memoryview of the plaintext, in ModeSealed decrypted into out if it
        is large enough (else into a buffer of this Opener that the next
        record overwrites), in ModeIntegrity a view into rec."""
        d = self.d
        typ = rec[0]
        n = int.from_bytes(rec[1:4], "big")
        if len(rec) != HEADER + n + TAG:
            raise self.integrity("a record of %d bytes announces %d payload bytes" % (len(rec), n))
        nonce = d.nonce()
        try:
            if self.mode == MODE_SEALED:
                if self._scratch is None or len(self._scratch) < n + 15:
                    self._scratch = memoryview(bytearray(max(n + 15, 4096 if n < 4096 else MAX_PAYLOAD + 15)))
                payload, self.into_out = d.aead.open_sealed(nonce, rec, n, self._scratch, out)
            else:
                payload, self.into_out = d.aead.open_integrity(nonce, rec, n), False
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
