package process

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
	}{{ModeTPBTF, Options{}}, {ModeRawTP, Options{ForceRawTP: true}}, {ModeTPBTF + "_lean_fork", Options{LeanFork: true}}} {
		b.Run(mode.name, func(b *testing.B) {
			s := openSensor(b, mode.opts)
			if !strings.HasPrefix(mode.name, s.Stats().Mode) {
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

// BenchmarkShellLoop runs execs as fast as a shell can (one fork+exec+exit
// per iteration; b.N execs) without the sensor ("off") and with it ("on"),
// and reports the event rate delivered and the events lost.
func BenchmarkShellLoop(b *testing.B) {
	loop := func(b *testing.B) *exec.Cmd {
		return exec.Command("/bin/sh", "-c", `i=0; while [ $i -lt $1 ]; do /bin/true; i=$((i+1)); done`, "sh", strconv.Itoa(b.N))
	}
	b.Run("off", func(b *testing.B) {
		if err := loop(b).Run(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("on", func(b *testing.B) {
		b.StopTimer()
		s := openSensor(b, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		var got atomic.Uint64
		var shell atomic.Uint32
		done := make(chan error, 1)
		go func() {
			done <- s.Run(ctx, func(e sensor.ProcessEvent) {
				if sh := shell.Load(); sh != 0 && (e.PPID == sh || e.PID == sh) {
					got.Add(1)
				}
			})
		}()
		cmd := loop(b)
		b.StartTimer()
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		shell.Store(uint32(cmd.Process.Pid))
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		// Each iteration gives fork, exec and exit; plus the shell's exit.
		want := uint64(3*b.N + 1)
		deadline := time.Now().Add(5 * time.Second)
		for got.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		var drops uint64
		for _, d := range s.Stats().Dropped {
			drops += d
		}
		b.ReportMetric(float64(got.Load())/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(want)-float64(min(got.Load(), want)), "missing")
		b.ReportMetric(float64(drops), "drops")
	})
}
