// Package network is the agent's network sensor: eBPF programs that report
// outbound TCP connects (established or failed), inbound accepts and listens,
// each attributed to the process that made it.
//
// It exists because connection tables (/proc/net/tcp, ss) are snapshots: a
// short connection opens and closes between two polls, and they do not say
// which process made it.
//
// The trap: TCP state changes often run in softirq context, where the
// kernel's "current" task is whoever happened to be interrupted, not the
// socket's owner. The sensor records the owner when connect(2) moves the
// socket to SYN_SENT and attributes the later ESTABLISHED/CLOSE transition
// to it; accepts are taken at accept(2)'s return, in the acceptor's context.
// Never attribute a network event to current in a state-change hook.
//
// Direction convention: Dst is always the server side (the address
// connected to, the accepting socket, the listening address) and Src the
// client side, so a filter on Dst's port finds connects to, accepts on and
// listens on that port alike.
//
// Dedup rule: connects and accepts are keyed in the kernel by (process,
// kind, result, family, client address, server address and port: all but
// the client's ephemeral port). The first event of a
// key is delivered at once (Count 1); repeats within the window only count
// up, and once the key is older than Options.Window, Run removes it and
// delivers one summary event (Summary true, Count = the repeats) if there
// were any. So 20k connects from one process to one destination give one
// event plus a summary per window. A repeat racing with the removal may be
// lost from the count (the kernel increments a value being deleted).
package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
)

// Kind says what an Event records.
type Kind uint8

// Event kinds, as KIND_* in bpf/network.c.
const (
	KindConnect Kind = 1
	KindAccept  Kind = 2
	KindListen  Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindConnect:
		return "connect"
	case KindAccept:
		return "accept"
	case KindListen:
		return "listen"
	}
	return "unknown"
}

const protoTCP = 6

// Event is one network event as the kernel saw it.
type Event struct {
	Kind     Kind
	BootNs   uint64 // event time (for a summary: the last repeat), ns since boot
	Protocol uint8  // IPPROTO_* (6 = TCP)
	Failed   bool   // connect: the connection was not established (refused, timed out)
	Src      netip.AddrPort
	Dst      netip.AddrPort

	// The acting process. A summary carries only PID and StartBootNs.
	PID, TID, PPID, UID uint32
	StartBootNs         uint64
	ParentStartBootNs   uint64
	CgroupID            uint64
	Comm                string

	Count       uint64 // events this one stands for: 1, or the repeats of a summary
	Summary     bool   // a dedup window's repeats, not a single event
	FirstBootNs uint64 // summary: when the window began
}

// Family returns "ipv4" or "ipv6".
func (e *Event) Family() string {
	if e.Dst.Addr().Is4() || e.Src.Addr().Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// Defaults and limits of Options.
const (
	DefaultRingBytes = 4 << 20
	DefaultPoll      = 50 * time.Millisecond
	DefaultWindow    = 10 * time.Second
	minRingBytes     = 4096
	maxRingBytes     = 1 << 30
)

// Hook modes reported in Stats().Mode.
const (
	ModeTPBTF = sensor.ModeTPBTF
	ModeRawTP = sensor.ModeRawTP
)

// hook names, indexed like HOOK_* in bpf/network.c.
var hookNames = [2]string{"inet_sock_set_state", "sys_exit_accept"}

// Options configures a Sensor; the zero value means defaults.
type Options struct {
	RingBytes  int           // ring buffer size, a power of two >= the page size; default 4 MiB
	Poll       time.Duration // longest an event waits in the ring, 1ms..10s; default 50ms
	Window     time.Duration // dedup window, 10ms..1h; default 10s
	NoDedup    bool          // deliver every connect and accept
	ForceRawTP bool          // skip tp_btf and load the raw_tp fallback
}

func (o *Options) validate() error {
	if o.RingBytes == 0 {
		o.RingBytes = DefaultRingBytes
	}
	if floor := max(minRingBytes, os.Getpagesize()); o.RingBytes < floor || o.RingBytes > maxRingBytes || o.RingBytes&(o.RingBytes-1) != 0 {
		return fmt.Errorf("network sensor: RingBytes %d: must be a power of two between %d (the page size) and %d", o.RingBytes, floor, maxRingBytes)
	}
	if o.Poll == 0 {
		o.Poll = DefaultPoll
	}
	if o.Poll < time.Millisecond || o.Poll > 10*time.Second {
		return fmt.Errorf("network sensor: Poll %v: must be between 1ms and 10s", o.Poll)
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.Window < 10*time.Millisecond || o.Window > time.Hour {
		return fmt.Errorf("network sensor: Window %v: must be between 10ms and 1h", o.Window)
	}
	return nil
}

// Sensor is a loaded and attached network sensor.
type Sensor struct {
	mode   string
	opts   Options
	hooks  []string
	objs   objs
	links  []link.Link
	rd     *ringbuf.Reader
	noLAD  atomic.Bool // LookupAndDelete unsupported on the flows map
	events [2]atomic.Uint64
	sums   atomic.Uint64 // summary events delivered
	bad    atomic.Uint64 // records that failed to decode

	runMu     sync.Mutex
	closeOnce sync.Once
	closeErr  error
}

// objs holds the maps and programs of one mode; State is the mode's
// inet_sock_set_state program.
type objs struct {
	common
	State *ebpf.Program
}

type common struct {
	Events  *ebpf.Map     `ebpf:"events"`
	Owners  *ebpf.Map     `ebpf:"owners"`
	Flows   *ebpf.Map     `ebpf:"flows"`
	Drops   *ebpf.Map     `ebpf:"drops"`
	Accept  *ebpf.Program `ebpf:"tp_accept"`
	Accept4 *ebpf.Program `ebpf:"tp_accept4"`
}

func (o *objs) close() {
	// Close is safe on nil programs and maps.
	for _, p := range []*ebpf.Program{o.State, o.Accept, o.Accept4} {
		_ = p.Close()
	}
	for _, m := range []*ebpf.Map{o.Events, o.Owners, o.Flows, o.Drops} {
		_ = m.Close()
	}
}

type tpBTFObjs struct {
	common
	Prog *ebpf.Program `ebpf:"tp_btf_state"`
}

type rawTPObjs struct {
	common
	Prog *ebpf.Program `ebpf:"raw_tp_state"`
}

// Open probes the kernel, loads the programs and attaches them, tp_btf
// first and raw_tp if that fails. The error wraps ebpf.ErrNotSupported when
// the kernel cannot run the sensor.
func Open(opts Options) (*Sensor, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return sensor.OpenBest("network sensor", opts.ForceRawTP, func(mode string) (*Sensor, error) { return openMode(opts, mode) })
}

func openMode(opts Options, mode string) (*Sensor, error) {
	spec, err := loadNetwork()
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(opts.RingBytes)
	dedup := uint8(1)
	if opts.NoDedup {
		dedup = 0
	}
	if err := spec.Variables["dedup"].Set(dedup); err != nil {
		return nil, fmt.Errorf("set dedup: %w", err)
	}
	s := &Sensor{mode: mode, opts: opts}
	// Load only one state program: the other mode's may not verify here.
	if mode == ModeTPBTF {
		delete(spec.Programs, "raw_tp_state")
		var o tpBTFObjs
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return nil, fmt.Errorf("load %s programs: %w", mode, err)
		}
		s.objs = objs{o.common, o.Prog}
	} else {
		delete(spec.Programs, "tp_btf_state")
		var o rawTPObjs
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return nil, fmt.Errorf("load %s programs: %w", mode, err)
		}
		s.objs = objs{o.common, o.Prog}
	}
	var l link.Link
	if mode == ModeTPBTF {
		l, err = link.AttachTracing(link.TracingOptions{Program: s.objs.State})
	} else {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: hookNames[0], Program: s.objs.State})
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("attach %s/%s: %w", mode, hookNames[0], err)
	}
	s.links = append(s.links, l)
	s.hooks = append(s.hooks, mode+"/"+hookNames[0])
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{{"sys_exit_accept", s.objs.Accept}, {"sys_exit_accept4", s.objs.Accept4}} {
		l, err := link.Tracepoint("syscalls", tp.name, tp.prog, nil)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attach tracepoint/syscalls/%s: %w", tp.name, err)
		}
		s.links = append(s.links, l)
		s.hooks = append(s.hooks, "tracepoint/syscalls/"+tp.name)
	}
	s.rd, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ring reader: %w", err)
	}
	return s, nil
}

// Run reads events until ctx is done, ends expired dedup windows as it goes,
// then delivers what is still in the ring and every pending summary and
// returns nil. emit is called from this goroutine only.
func (s *Sensor) Run(ctx context.Context, emit func(Event)) error {
	if emit == nil {
		return errors.New("network sensor: Run needs an emit function")
	}
	if !s.runMu.TryLock() {
		return errors.New("network sensor: Run already running")
	}
	defer s.runMu.Unlock()

	stop := context.AfterFunc(ctx, func() { _ = s.rd.Flush() })
	defer stop()

	sweepEvery := min(s.opts.Window/4, time.Second)
	lastSweep := time.Now()
	var rec ringbuf.Record
	var ev Event
	s.rd.SetDeadline(time.Now().Add(s.opts.Poll))
	for {
		if time.Since(lastSweep) >= sweepEvery {
			s.sweep(s.opts.Window, emit)
			lastSweep = time.Now()
		}
		err := s.rd.ReadInto(&rec)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.rd.SetDeadline(time.Now().Add(s.opts.Poll))
			continue
		case errors.Is(err, ringbuf.ErrFlushed):
			if ctx.Err() != nil {
				s.sweep(0, emit)
				return nil
			}
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("network sensor: read ring: %w", err)
		}
		if err := decode(rec.RawSample, &ev); err != nil {
			s.bad.Add(1)
			continue
		}
		if ev.Kind == KindAccept {
			s.events[1].Add(1)
		} else {
			s.events[0].Add(1)
		}
		emit(ev)
	}
}

// sweep removes dedup keys older than window and emits a summary for each
// that counted repeats. window 0 ends every key.
func (s *Sensor) sweep(window time.Duration, emit func(Event)) {
	now := bootNow()
	var k networkFlowKey
	var v networkFlowVal
	var expired []networkFlowKey
	it := s.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		if window == 0 || now-v.First >= uint64(window) {
			expired = append(expired, k)
		}
	}
	for i := range expired {
		var err error
		if !s.noLAD.Load() {
			err = s.objs.Flows.LookupAndDelete(&expired[i], &v)
			if errors.Is(err, ebpf.ErrNotSupported) {
				s.noLAD.Store(true)
			}
		}
		if s.noLAD.Load() {
			if err = s.objs.Flows.Lookup(&expired[i], &v); err == nil {
				err = s.objs.Flows.Delete(&expired[i])
			}
		}
		if err != nil || v.Count == 0 {
			continue
		}
		ev, err := flowEvent(&expired[i], &v)
		if err != nil {
			s.bad.Add(1)
			continue
		}
		s.sums.Add(1)
		emit(ev)
	}
}

// Stats reports the mode, the attached hooks, delivered events and drops.
func (s *Sensor) Stats() sensor.Stats {
	st := sensor.Stats{
		Mode:    s.mode,
		Hooks:   append([]string(nil), s.hooks...),
		Events:  make(map[string]uint64, len(hookNames)+1),
		Dropped: make(map[string]uint64, len(hookNames)+1),
	}
	for i, name := range hookNames {
		st.Events[name] = s.events[i].Load()
		st.Dropped[name] = 0
	}
	st.Events["flow_summary"] = s.sums.Load()
	sensor.SumDrops(s.objs.Drops, hookNames[:], st.Dropped)
	if n := s.bad.Load(); n > 0 {
		st.Dropped["malformed"] = n
	}
	return st
}

// Close detaches the programs and frees the maps; a running Run returns.
func (s *Sensor) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = sensor.Teardown("network sensor", s.links, s.rd, &s.runMu, s.objs.close)
	})
	return s.closeErr
}

// bootNow returns CLOCK_BOOTTIME in ns, the clock of the kernel's timestamps.
func bootNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano())
}
