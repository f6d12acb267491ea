package netx

import "time"

// Timeout resolves a configured timeout or lifetime the way every Config
// of this module documents it: zero means def, a negative value means none
// (0), anything else is itself. (Counts resolve with cmp.Or: zero means
// the default.)
func Timeout(v, def time.Duration) time.Duration {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}
