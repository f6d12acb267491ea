package hmacauth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// MaxKeyFileSize is the largest key file LoadKeys and ParseKeys read.
const MaxKeyFileSize = 1 << 20

// keyFilePermMask holds the permission bits a key file must not have:
// write by its group, and any access by other users.
const keyFilePermMask fs.FileMode = 0o027

// LoadKeys reads a key file: one key per line, the key ID, blanks (spaces or
// tabs), then the secret in standard base64 with or without padding, as
// `hmacauth keygen` prints it:
//
//	# hmacauth keys: ID SECRET (base64, at least 32 bytes)
//	2026-06 p4lFlM8hFRlDyjK/muak6VbKDgp9SvZqypRVg3FuIJs=
//	2026-01 KLDrXGkpol3tu3FzH2P9uvFB36ua3O93rBFboWBQjqA   # old, drop soon
//
// The file is UTF-8 (a leading byte order mark is skipped) with LF or CRLF
// line ends. Blank lines are ignored, and so is everything from a '#' that starts a
// line or follows a blank. The first key is the one a dialer proves. Key
// IDs and secrets follow the rules of Key; IDs must be unique.
//
// The file may be readable by its owner and group, and writable by its
// owner only: LoadKeys refuses a file that other users can read or write,
// or its group can write (mode&0o027 != 0), with an error wrapping
// ErrConfig. On Kubernetes, mount the secret with defaultMode 0400 (or
// 0440 with fsGroup). On Unix it also refuses a file owned by a user other
// than the process's effective user or root, as OpenSSH's StrictModes does
// (that user could change the keys), with an error wrapping ErrConfig.
// Both are checked on the file opened, after following symbolic links.
// Neither mode nor owner is checked on Windows.
//
// Errors wrap ErrConfig (or ErrWeakKey for a short secret), name the file
// and line, and never quote the line: a secret in the wrong column must not
// end up in a log.
func LoadKeys(path string) ([]Key, error) {
	data, _, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return parseKeys(data, "key file "+path)
}

// ParseKeys reads keys in the format of LoadKeys from r, up to
// MaxKeyFileSize bytes.
func ParseKeys(r io.Reader) ([]Key, error) {
	data, err := readLimited(r, "key list")
	if err != nil {
		return nil, err
	}
	return parseKeys(data, "key list")
}

// readKeyFile reads the key file at path after checking its mode and
// owner, and returns its contents and the FileInfo of the file it opened
// (after following symbolic links), also with an error once the file is
// open.
func readKeyFile(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("hmacauth: reading key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("hmacauth: reading key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fi, errorf(ErrConfig, "key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&keyFilePermMask != 0 && runtime.GOOS != "windows" {
		return nil, fi, errorf(ErrConfig, "key file %s has mode %#o, so other users can read or change it; "+
			"run chmod 600 (or 640) on it (on Kubernetes set the secret volume's defaultMode to 0400 or 0440)", path, perm)
	}
	if err := checkKeyFileOwner(path, fi); err != nil {
		return nil, fi, err
	}
	data, err := readLimited(f, "key file "+path)
	return data, fi, err
}

func readLimited(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("hmacauth: reading %s: %w", name, err)
	}
	if len(data) > MaxKeyFileSize {
		return nil, errorf(ErrConfig, "%s is larger than %d bytes; is it a key file?", name, MaxKeyFileSize)
	}
	return data, nil
}

// parseKeys parses a key file's contents. name says where they came from.
func parseKeys(data []byte, name string) ([]Key, error) {
	var keys []Key
	lineOf := make(map[string]int)
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 BOM, as some editors write
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		if i := bytes.IndexByte(line, '#'); i >= 0 && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			line = line[:i]
		}
		fields := strings.FieldsFunc(string(line), func(r rune) bool { return r == ' ' || r == '\t' || r == '\r' })
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, errorf(ErrConfig, "%s, line %d: has %d fields; want a key ID, blanks, then the base64 secret", name, n, len(fields))
		}
		secret, err := decodeSecret(fields[1])
		if err != nil {
			return nil, errorf(ErrConfig, "%s, line %d: the secret (second field) is not valid base64: use the standard alphabet, with or without padding", name, n)
		}
		k := Key{ID: fields[0], Secret: secret}
		if err := k.Validate(); err != nil {
			if errors.Is(err, ErrWeakKey) {
				return nil, errorf(ErrWeakKey, "%s, line %d: the secret has %d bytes; use at least %d random bytes, e.g. from `hmacauth keygen`", name, n, len(secret), MinSecretLen)
			}
			return nil, errorf(ErrConfig, "%s, line %d: the key ID (first field) is not valid: it must be 1 to %d printable ASCII bytes without blanks", name, n, MaxKeyIDLen)
		}
		if prev, dup := lineOf[k.ID]; dup {
			return nil, errorf(ErrConfig, "%s, line %d: the key ID is the same as on line %d; key IDs must be unique", name, n, prev)
		}
		lineOf[k.ID] = n
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errorf(ErrConfig, "%s holds no keys; add a line with a key ID and a base64 secret", name)
	}
	return keys, nil
}

// decodeSecret decodes standard base64, padded or not.
func decodeSecret(s string) ([]byte, error) {
	enc := base64.StdEncoding
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	return enc.Strict().DecodeString(s)
}
