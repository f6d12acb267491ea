package hmacauth

import (
	"context"
	"crypto/sha256"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// DefaultWatchInterval is how often a KeyFileWatcher checks its file when
// Interval is zero.
const DefaultWatchInterval = 5 * time.Second

// A KeyFileWatcher keeps a Keyring in step with a key file (see LoadKeys),
// so that keys rotate without a restart.
//
// It polls, without any file-notification dependency: every Interval it
// stats Path, following symbolic links, and when the file it resolves to
// differs from the last one read (another inode, size, modification time
// or mode) it reads it, and sets the Keyring when the contents changed (by
// SHA-256). This catches the usual ways of updating a secret file at once:
// writing a new file and renaming it over the old one, and a Kubernetes
// secret volume, where Path is a symbolic link through "..data", which the
// kubelet swaps to a new directory. Replace the file by rename: a file
// edited in place may be read half-written, and a half-written file that
// still parses (cut at a line end) sets fewer keys without an error; an
// edit within the file system's time granularity that keeps the size may
// not be noticed at all.
//
// A file that cannot be read or parsed leaves the Keyring as it was; the
// error goes to OnError and Logger, once per change of the file. Each load
// that sets the Keyring goes to OnReload and Logger.
type KeyFileWatcher struct {
	// Path is the key file.
	Path string
	// Keyring receives the keys. Required.
	Keyring *Keyring
	// Interval is the time between checks. Zero means
	// DefaultWatchInterval (5 s).
	Interval time.Duration
	// OnError, if not nil, is called with every error of a reload after
	// the first; the Keyring keeps its keys.
	OnError func(error)
	// OnReload, if not nil, is called with the key IDs after every load
	// that set the Keyring, Run's first load included; a file that is
	// replaced by one with the same contents sets nothing and is not
	// reported. Like OnError, it is called on Run's goroutine, one call
	// at a time, and should return quickly.
	OnReload func(keyIDs []string)
	// Logger, if not nil, receives a record at level Info for each reload
	// (path and key IDs) and at level Warn for each failed one.
	Logger *slog.Logger
}

// watchState is what a KeyFileWatcher knows of the file it last read.
type watchState struct {
	fi      fs.FileInfo // the file last read; nil if none or gone
	sum     [sha256.Size]byte
	loaded  bool   // sum holds the contents of the keys in the Keyring
	lastErr string // the error last reported, so a lasting one is reported once
}

// Run loads the key file into the Keyring, then checks the file every
// Interval until ctx is done. If the first load fails, Run returns its
// error at once and the Keyring is left as it was; otherwise Run returns
// ctx.Err() when ctx is done. Run it on its own goroutine.
func (w *KeyFileWatcher) Run(ctx context.Context) error {
	if w.Keyring == nil {
		return errorf(ErrConfig, "KeyFileWatcher.Keyring is nil")
	}
	var st watchState
	if err := w.reload(&st); err != nil {
		return err
	}
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		w.check(&st)
	}
}

// check reloads the file if it changed since the last read, and reports
// a new error.
func (w *KeyFileWatcher) check(st *watchState) {
	fi, err := os.Stat(w.Path)
	switch {
	case err != nil:
		st.fi = nil
	case st.fi != nil && os.SameFile(fi, st.fi) && fi.Size() == st.fi.Size() &&
		fi.ModTime().Equal(st.fi.ModTime()) && fi.Mode() == st.fi.Mode():
		return // not changed: nothing new to load or to report
	default:
		err = w.reload(st)
	}
	if err == nil {
		st.lastErr = ""
		return
	}
	if err.Error() == st.lastErr {
		return
	}
	st.lastErr = err.Error()
	if w.Logger != nil {
		w.Logger.Warn("hmacauth: key file not reloaded; keeping the current keys", slog.String("path", w.Path), slog.String("error", err.Error()))
	}
	if w.OnError != nil {
		w.OnError(err)
	}
}

// reload reads the file, and parses and applies it if its contents changed.
func (w *KeyFileWatcher) reload(st *watchState) error {
	data, fi, err := readKeyFile(w.Path)
	st.fi = fi // a bad file is not read again until it changes
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	if st.loaded && sum == st.sum {
		return nil
	}
	keys, err := parseKeys(data, "key file "+w.Path)
	if err != nil {
		return err
	}
	if err := w.Keyring.Set(keys...); err != nil {
		return err
	}
	st.sum, st.loaded = sum, true
	ids := keyIDs(keys)
	if w.Logger != nil {
		w.Logger.Info("hmacauth: loaded key file", slog.String("path", w.Path), slog.Any("key_ids", ids))
	}
	if w.OnReload != nil {
		w.OnReload(ids)
	}
	return nil
}
