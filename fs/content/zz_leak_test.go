package content

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestZZNoLeakedGoroutines runs last (file order) and checks that no
// goroutine of this package outlives the tests that started it (readahead
// after Handle.Close, uploads after Engine.Close).
func TestZZNoLeakedGoroutines(t *testing.T) {
	var leaked []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		leaked = leaked[:0]
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "s3cryptfs/fs/content.") && !strings.Contains(g, "TestZZNoLeakedGoroutines") &&
				!strings.Contains(g, "content.TestMain(") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, g := range leaked {
		t.Errorf("leaked goroutine:\n%s", g)
	}
}
