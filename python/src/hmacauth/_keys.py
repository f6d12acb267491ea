"""Keys and key files, in the format of the Go package's LoadKeys."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
import sys
from typing import Dict, List, Optional, Tuple, Union

from ._errors import ConfigError, HmacAuthError, WeakKey, quote

__all__ = ["Key", "load_keys", "parse_keys", "MIN_SECRET_LEN", "MAX_KEY_ID_LEN", "MAX_KEY_FILE_SIZE"]

#: The shortest secret a Key may have: 32 bytes, from a random source.
MIN_SECRET_LEN = 32
#: The longest key ID.
MAX_KEY_ID_LEN = 64
#: The largest key file load_keys and parse_keys read.
MAX_KEY_FILE_SIZE = 1 << 20

# Permission bits a key file must not have: write by its group, any access
# by other users.
_KEY_FILE_PERM_MASK = 0o027


def _check_key_id(key_id: str) -> None:
    b = key_id.encode("utf-8", "surrogateescape")
    if not 1 <= len(b) <= MAX_KEY_ID_LEN:
        raise ConfigError("key ID %s has %d bytes; it must have 1 to %d" % (quote(key_id), len(b), MAX_KEY_ID_LEN))
    for i, c in enumerate(b):
        if not 0x21 <= c <= 0x7E:
            raise ConfigError(
                "key ID %s has byte 0x%02x at offset %d; use printable ASCII without spaces" % (quote(key_id), c, i)
            )


class Key:
    """A shared secret with a name; both sides of a connection hold the same Key.

    ``id`` names the key on the wire, in the clear: 1 to 64 printable ASCII
    characters. ``secret`` is at least MIN_SECRET_LEN random bytes; make one
    with Key.generate or ``hmacauth keygen``. repr, str and pickling never
    show the secret.
    """

    __slots__ = ("_id", "_secret")

    def __init__(self, id: str, secret: Union[bytes, bytearray, memoryview]) -> None:
        if not isinstance(id, str):
            raise ConfigError("key ID must be a str, not %s" % type(id).__name__)
        if not isinstance(secret, (bytes, bytearray, memoryview)):
            raise ConfigError("key secret must be bytes, not %s" % type(secret).__name__)
        self._id = id
        self._secret = bytes(secret)

    @classmethod
    def generate(cls, id: str) -> "Key":
        """Returns a Key with the given ID and a fresh 32-byte random secret."""
        _check_key_id(id)
        return cls(id, secrets.token_bytes(MIN_SECRET_LEN))

    @property
    def id(self) -> str:
        return self._id

    @property
    def secret(self) -> bytes:
        return self._secret

    def validate(self) -> None:
        """Raises ConfigError for a bad ID, WeakKey for a short secret."""
        _check_key_id(self._id)
        if len(self._secret) < MIN_SECRET_LEN:
            raise WeakKey(
                "key %s has a %d-byte secret; use at least %d random bytes, e.g. from `hmacauth keygen` or Key.generate"
                % (quote(self._id), len(self._secret), MIN_SECRET_LEN)
            )

    def __repr__(self) -> str:
        return "hmacauth.Key(id=%r, secret=[%d bytes redacted])" % (self._id, len(self._secret))

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        import hmac

        return self._id == other._id and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self._id)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth.Key is not picklable: a pickle would hold its secret; store keys in key files")


def _decode_secret(s: str) -> bytes:
    # As keyfile.go's decodeSecret: padded base64 when the length is a
    # multiple of 4, else unpadded (no '=' at all).
    if len(s) % 4 != 0:
        if "=" in s:
            raise ValueError("padding in base64 whose length is not a multiple of 4")
        s += "=" * (-len(s) % 4)
        if s.endswith("==="):
            raise ValueError("bad length")
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(str(e)) from None
    # Strict, as Go's Strict(): the unused bits of the last character are zero.
    if base64.b64encode(raw).decode("ascii").rstrip("=") != s.rstrip("="):
        raise ValueError("non-canonical")
    return raw


def parse_keys(data: Union[bytes, str], name: str = "key list") -> List[Key]:
    """Parses keys in the format of load_keys from data."""
    keys, err = _parse_keys(data, name)
    del data
    if err is not None:
        # Raised here, with the parser's frames gone and data deleted: no
        # frame of the traceback holds the key file (error reporters such as
        # Sentry and pytest --showlocals record frame locals).
        raise err
    return keys


def _parse_keys(data: Union[bytes, str], name: str) -> "Tuple[List[Key], Optional[HmacAuthError]]":
    """The keys, or the error to raise (made, not raised, so that no
    traceback holds this frame)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_KEY_FILE_SIZE:
        return [], ConfigError("%s is larger than %d bytes; is it a key file?" % (name, MAX_KEY_FILE_SIZE))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    keys: List[Key] = []
    line_of: Dict[str, int] = {}
    for n, line in enumerate(data.split(b"\n"), 1):
        # As keyfile.go: only the line's first '#' starts a comment, and only
        # at the start of the line or after a blank.
        i = line.find(b"#")
        if i == 0 or (i > 0 and line[i - 1] in b" \t"):
            line = line[:i]
        fields = [f for f in line.replace(b"\t", b" ").replace(b"\r", b" ").split(b" ") if f]
        if not fields:
            continue
        if len(fields) != 2:
            return [], ConfigError(
                "%s, line %d: has %d fields; want a key ID, blanks, then the base64 secret" % (name, n, len(fields))
            )
        try:
            secret = _decode_secret(fields[1].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return [], ConfigError(
                "%s, line %d: the secret (second field) is not valid base64: use the standard alphabet, with or without padding"
                % (name, n)
            )
        key_id = fields[0].decode("utf-8", "surrogateescape")
        k = Key(key_id, secret)
        try:
            k.validate()
        except WeakKey:
            return [], WeakKey(
                "%s, line %d: the secret has %d bytes; use at least %d random bytes, e.g. from `hmacauth keygen`"
                % (name, n, len(secret), MIN_SECRET_LEN)
            )
        except ConfigError:
            return [], ConfigError(
                "%s, line %d: the key ID (first field) is not valid: it must be 1 to %d printable ASCII bytes without blanks"
                % (name, n, MAX_KEY_ID_LEN)
            )
        if k.id in line_of:
            return [], ConfigError(
                "%s, line %d: the key ID is the same as on line %d; key IDs must be unique" % (name, n, line_of[k.id])
            )
        line_of[k.id] = n
        keys.append(k)
    if not keys:
        return [], ConfigError("%s holds no keys; add a line with a key ID and a base64 secret" % name)
    return keys, None


def load_keys(path: Union[str, "os.PathLike[str]"]) -> List[Key]:
    """Reads a key file in the Go package's format: one key per line, the key
    ID, blanks, then the secret in standard base64 with or without padding
    (padding only when the length is a multiple of 4); a line's first '#'
    starts a comment if it is at the start of the line or after a blank.

    The file must not be writable by its group or accessible by other users
    (mode & 0o027 == 0), and on Unix it must be owned by the effective user
    or root, as OpenSSH's StrictModes; both are checked on the opened file.
    Errors are ConfigError (WeakKey for a short secret); they name the file
    and line and never quote a line.
    """
    path = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is
        # refused below as not a regular file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise type(e)(e.errno, "hmacauth: reading key file: %s" % e.strerror, path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("key file %s is not a regular file" % path)
        perm = stat.S_IMODE(st.st_mode)
        if perm & _KEY_FILE_PERM_MASK and sys.platform != "win32":
            raise ConfigError(
                "key file %s has mode 0%o, so other users can read or change it; "
                "run chmod 600 (or 640) on it (on Kubernetes set the secret volume's defaultMode to 0400 or 0440)"
                % (path, perm)
            )
        if hasattr(os, "geteuid"):
            euid = os.geteuid()
            if st.st_uid != 0 and st.st_uid != euid:
                raise ConfigError(
                    "key file %s is owned by uid %d, not by uid %d (the effective user of this process) or root, "
                    "so another user can change the keys; run chown %d on it, or have its owner run this process"
                    % (path, st.st_uid, euid, euid)
                )
        # The file's contents are never a local of this frame (see parse_keys).
        keys, err = _parse_keys(_read_all(fd), "key file " + path)
    finally:
        os.close(fd)
    if err is not None:
        raise err
    return keys


def _read_all(fd: int) -> bytes:
    """Up to MAX_KEY_FILE_SIZE + 1 bytes of fd; on an error, this frame
    keeps none of what it read."""
    chunks: List[bytes] = []
    size = 0
    try:
        while size <= MAX_KEY_FILE_SIZE:
            chunks.append(os.read(fd, MAX_KEY_FILE_SIZE + 1 - size))
            if not chunks[-1]:
                break
            size += len(chunks[-1])
        return b"".join(chunks)
    finally:
        chunks.clear()
