package agent

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
	"github.com/mamori-edr/mamori/internal/agent/sensor/network"
	"github.com/mamori-edr/mamori/internal/schema"
	"golang.org/x/sys/unix"
)

// netAttributeDelay is how long a network event waits before it is
// attributed: the process sensor's ring is read on its own timer, so the
// exec that gave a process its image may be handled up to a poll interval
// after a connect the new image made.
const netAttributeDelay = 150 * time.Millisecond

// netQueueLen bounds network events waiting for attribution.
const netQueueLen = 8192

// netState is the network sensor beside the process sensor. Its fields are
// guarded by Agent.mu, except q and done, owned by runNetSensor.
type netState struct {
	sensor  *network.Sensor
	hooks   []string
	dropped map[string]uint64
	err     string
	done    chan struct{} // closed when runNetSensor returned
}

// openNetSensor opens the network sensor; on failure the agent runs on and
// the reason shows in status.
func (a *Agent) openNetSensor() {
	a.net.done = make(chan struct{})
	if a.cfg.NoSensor {
		return
	}
	s, err := network.Open(network.Options{})
	if err != nil {
		a.log.Error("network sensor unavailable: running without network events", "err", err)
		a.mu.Lock()
		a.net.err = "network sensor: " + err.Error()
		a.mu.Unlock()
		return
	}
	a.mu.Lock()
	a.net.sensor, a.net.hooks = s, s.Stats().Hooks
	a.mu.Unlock()
}

// runNetSensor reads the network sensor until ctx is done. Events go
// through a delay queue to the attributor, which hands schema events to
// the writer through the late queue.
func (a *Agent) runNetSensor(ctx context.Context) error {
	defer close(a.net.done)
	a.mu.Lock()
	s := a.net.sensor
	a.mu.Unlock()
	if s == nil {
		return nil
	}
	q := make(chan network.Event, netQueueLen)
	attributed := make(chan struct{})
	go func() {
		defer close(attributed)
		for ev := range q {
			if wait := time.Duration(ev.BootNs+uint64(netAttributeDelay)) - time.Duration(bootNowNs()); wait > 0 && ctx.Err() == nil {
				time.Sleep(wait)
			}
			out := netSchemaEvent(a.bootID, ev)
			for _, snap := range a.procs.Attribute(&out, ev.PID, ev.StartBootNs) {
				a.lateEvent(snap)
			}
			if out.Process != nil && out.Process.Name == "" {
				out.Process.Name = ev.Comm
			}
			a.lateEvent(out)
		}
	}()
	err := s.Run(ctx, func(ev network.Event) {
		a.kernelEvents.Add(1)
		if ev.PID == a.selfPID {
			return
		}
		select {
		case q <- ev:
		default:
			a.queueDropped.Add(1)
		}
	})
	close(q)
	<-attributed
	a.updateNetStats()
	s.Close()
	a.mu.Lock()
	a.net.sensor = nil
	if err != nil && ctx.Err() == nil {
		a.log.Error("network sensor stopped", "err", err)
		a.net.err = "network sensor stopped: " + err.Error()
	}
	a.mu.Unlock()
	return nil
}

// waitNet waits until the network sensor's events are in the late queue.
func (a *Agent) waitNet() {
	if a.net.done != nil {
		<-a.net.done
	}
}

// updateNetStats copies the network sensor's drop counters.
func (a *Agent) updateNetStats() {
	a.mu.Lock()
	s := a.net.sensor
	a.mu.Unlock()
	if s == nil {
		return
	}
	st := s.Stats()
	a.mu.Lock()
	a.net.dropped = st.Dropped
	a.mu.Unlock()
}

// netStatusLocked adds the network sensor to a status: its hooks, and why
// it is not running.
func (a *Agent) netStatusLocked(hooks []string, sensorErr string) ([]string, string) {
	hooks = append(hooks, a.net.hooks...)
	if a.net.err != "" {
		sensorErr = strings.TrimPrefix(sensorErr+"; "+a.net.err, "; ")
	}
	return hooks, sensorErr
}

// netSchemaEvent converts a kernel network event, without the process.
func netSchemaEvent(bootID string, ev network.Event) schema.Event {
	n := &schema.Network{Family: ev.Family(), Protocol: "tcp", Count: ev.Count, Summary: ev.Summary, DstPort: ev.Dst.Port()}
	if ev.Protocol != 6 {
		n.Protocol = "ip/" + strconv.Itoa(int(ev.Protocol))
	}
	out := schema.Event{Schema: schema.Version, BootID: bootID, Time: sensor.BootNsToTime(ev.BootNs).UTC(), Network: n}
	switch ev.Kind {
	case network.KindConnect:
		out.Type, n.Direction, n.Result = schema.NetworkConnect, "outbound", "established"
		if ev.Failed {
			n.Result = "failed"
		}
	case network.KindAccept:
		out.Type, n.Direction = schema.NetworkAccept, "inbound"
	default:
		out.Type, n.Direction = schema.NetworkListen, "listen"
	}
	if ev.Src.Addr().IsValid() {
		n.SrcIP = ev.Src.Addr().String()
	}
	n.SrcPort = ev.Src.Port()
	if ev.Dst.Addr().IsValid() {
		n.DstIP = ev.Dst.Addr().String()
	}
	if ev.Summary {
		n.FirstTime = sensor.BootNsToTime(ev.FirstBootNs).UTC().Format(time.RFC3339Nano)
	}
	return out
}

func bootNowNs() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

func (a *Agent) closeNetSensor() {
	a.mu.Lock()
	s := a.net.sensor
	a.mu.Unlock()
	if s != nil {
		s.Close()
	}
}
