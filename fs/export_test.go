package fs

import "time"

// SetWriteBackRetryBase shortens the write-back retry delay for a test and
// returns the function that restores it.
func SetWriteBackRetryBase(d time.Duration) (restore func()) {
	old := writeBackRetryBase
	writeBackRetryBase = d
	return func() { writeBackRetryBase = old }
}
