//go:build unix

package hmacauth

import (
	"io/fs"
	"os"
	"syscall"
)

// checkKeyFileOwner refuses a key file owned by a user other than the
// process's effective user or root, as OpenSSH's StrictModes does: its
// owner can rewrite the keys whatever the mode, and a link may lead to it.
// fi is the FileInfo of the open file.
func checkKeyFileOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	euid := os.Geteuid()
	if st.Uid == 0 || int64(st.Uid) == int64(euid) {
		return nil
	}
	return errorf(ErrConfig, "key file %s is owned by uid %d, not by uid %d (the effective user of this process) or root, so another user can change the keys; "+
		"run chown %d on it, or have its owner run this process", path, st.Uid, euid, euid)
}
