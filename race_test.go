//go:build race

package hmacauth

func init() { raceEnabled = true }
