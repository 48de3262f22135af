package process

import (
	"context"
	"os/exec"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
)

// BenchmarkExec measures fork+exec+wait of /bin/true with and without the
// sensor, and the in-kernel cost per program run (kernel.bpf_stats).
func BenchmarkExec(b *testing.B) {
	run := func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline", run)
	for _, mode := range []struct {
		name string
		opts Options
	}{{ModeTPBTF, Options{}}, {ModeRawTP, Options{ForceRawTP: true}}} {
		b.Run(mode.name, func(b *testing.B) {
			s := openSensor(b, mode.opts)
			if s.Stats().Mode != mode.name {
				b.Skipf("mode %s not loaded", mode.name)
			}
			statsOff, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				b.Logf("no bpf run-time stats: %v", err)
			} else {
				defer statsOff.Close()
			}
			ctx, cancel := context.WithCancel(context.Background())
			var n atomic.Uint64
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, func(sensor.ProcessEvent) { n.Add(1) }) }()
			run(b)
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			for name, p := range map[string]*ebpf.Program{"exec": s.objs.Exec, "fork": s.objs.Fork, "exit": s.objs.Exit} {
				if st, err := p.Stats(); err == nil && st.RunCount > 0 {
					b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(st.RunCount), "ns/"+name+"-prog")
				}
			}
			var drops uint64
			for _, d := range s.Stats().Dropped {
				drops += d
			}
			b.ReportMetric(float64(drops), "drops")
		})
	}
}
