//go:build !linux

package main

// sandbox does nothing where Landlock does not exist; it says so.
func (t *tunnel) sandbox() {
	if !t.opts.noSandbox {
		t.log.Info("sandbox not applied: it exists on Linux only (Landlock)")
	}
}

// keyLoadError returns err: there is no sandbox to explain.
func (t *tunnel) keyLoadError(err error) error { return err }
