package netx

import "time"

// The rules by which every Config of this module resolves its zero values.

// Timeout resolves a configured timeout or lifetime the way every Config
// of this module documents it: zero means def, a negative value means none
// (0), anything else is itself.
func Timeout(v, def time.Duration) time.Duration {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// OrDefault resolves a configured count the way every Config of this
// module documents it: zero means def, anything else is itself (for the
// counts that allow it, a negative value means no limit).
func OrDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
