package sensor

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBootNsToTimeAgreesWithWallClock(t *testing.T) {
	for i := 0; i < 3; i++ { // first call computes the offset, later ones reuse it
		var boot unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
			t.Fatal(err)
		}
		got := BootNsToTime(uint64(boot.Nano()))
		if d := time.Since(got); d < -10*time.Millisecond || d > 10*time.Millisecond {
			t.Fatalf("call %d: BootNsToTime(now) is %v away from the wall clock", i, d)
		}
	}
}

func BenchmarkBootNsToTime(b *testing.B) {
	for i := 0; i < b.N; i++ {
		BootNsToTime(uint64(i))
	}
}
