// Package process is the agent's process sensor: eBPF programs on the
// sched_process_exec, sched_process_fork and sched_process_exit tracepoints
// that report every process start, fork and exit with its identity, image,
// argv and cwd.
//
// It exists because polling /proc misses short-lived processes and cannot
// tell which binary a process really ran; the kernel sees every exec.
//
// The trap: the kernel may refuse the preferred hooks. Open tries tp_btf
// first and falls back to raw_tp, so read Stats().Mode instead of assuming.
// Also, events are delivered from one goroutine: a slow emit callback fills
// the ring buffer and the kernel then drops events (counted in
// Stats().Dropped), it never waits for user space.
//
// What the fields mean: PIDs are those of the initial PID namespace. Exe and
// Cwd are built in the kernel by walking dentries and mounts up to the root
// of the task's mount namespace (a chroot is not honoured, like
// /proc/PID/exe). A path that does not start with "/" is a suffix: the walk
// stopped after 64 components or 4 KiB. An executable with no links left
// (memfd, deleted file) ends in " (deleted)". For a script, Exe is the
// interpreter and Args hold the script path, as the kernel sees it.
package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
)

// Defaults and limits of Options.
const (
	DefaultRingBytes = 8 << 20
	DefaultArgsMax   = 16 << 10
	DefaultPoll      = 50 * time.Millisecond
	MaxArgsMax       = 32 << 10 // ARGS_LIMIT in bpf/process.c
	minRingBytes     = 4096
	maxRingBytes     = 1 << 30
)

// Hook modes reported in Stats().Mode.
const (
	ModeTPBTF = sensor.ModeTPBTF
	ModeRawTP = sensor.ModeRawTP
)

// hook names, indexed like HOOK_* in bpf/process.c.
var hookNames = [3]string{"sched_process_exec", "sched_process_fork", "sched_process_exit"}

// Options configures a Sensor; the zero value means defaults.
//
// The kernel wakes the reader only once the ring is 1/16 full; below that
// Run reads on a timer, so an event waits at most Poll before emit.
type Options struct {
	RingBytes  int           // ring buffer size in bytes, a power of two >= the page size; default 8 MiB
	ArgsMax    int           // max argv bytes captured, 1..32 KiB; default 16 KiB (ArgsTruncated set beyond)
	Poll       time.Duration // longest an event waits in a quiet ring, 1ms..10s; default 50ms
	ForceRawTP bool          // skip tp_btf and load the raw_tp fallback (tests, broken BTF)
	// LeanFork leaves Exe, Args, Cwd and the exe identity empty in fork
	// events (the child runs its parent's image until it execs), which
	// makes a fork several times cheaper in the kernel.
	LeanFork bool
}

// validate fills defaults and checks each field.
func (o *Options) validate() error {
	if o.RingBytes == 0 {
		o.RingBytes = DefaultRingBytes
	}
	if floor := max(minRingBytes, os.Getpagesize()); o.RingBytes < floor || o.RingBytes > maxRingBytes || o.RingBytes&(o.RingBytes-1) != 0 {
		return fmt.Errorf("process sensor: RingBytes %d: must be a power of two between %d (the page size) and %d", o.RingBytes, floor, maxRingBytes)
	}
	if o.ArgsMax == 0 {
		o.ArgsMax = DefaultArgsMax
	}
	if o.ArgsMax < 1 || o.ArgsMax > MaxArgsMax {
		return fmt.Errorf("process sensor: ArgsMax %d: must be between 1 and %d", o.ArgsMax, MaxArgsMax)
	}
	if o.Poll == 0 {
		o.Poll = DefaultPoll
	}
	if o.Poll < time.Millisecond || o.Poll > 10*time.Second {
		return fmt.Errorf("process sensor: Poll %v: must be between 1ms and 10s", o.Poll)
	}
	return nil
}

// Sensor is a loaded and attached process sensor.
type Sensor struct {
	mode  string
	poll  time.Duration
	hooks []string
	objs  loaded
	links []link.Link
	rd    *ringbuf.Reader

	events    [3]atomic.Uint64 // delivered per hook
	malformed atomic.Uint64    // records that failed to decode

	runMu     sync.Mutex // one Run at a time
	closeOnce sync.Once
	closeErr  error
}

// loaded holds the maps and the three programs of one mode.
type loaded struct {
	Events *ebpf.Map     `ebpf:"events"`
	Heap   *ebpf.Map     `ebpf:"heap"`
	Drops  *ebpf.Map     `ebpf:"drops"`
	Exec   *ebpf.Program `ebpf:"-"`
	Fork   *ebpf.Program `ebpf:"-"`
	Exit   *ebpf.Program `ebpf:"-"`
}

func (l *loaded) close() {
	for _, p := range []*ebpf.Program{l.Exec, l.Fork, l.Exit} {
		if p != nil {
			_ = p.Close()
		}
	}
	for _, m := range []*ebpf.Map{l.Events, l.Heap, l.Drops} {
		if m != nil {
			_ = m.Close()
		}
	}
}

type tpBTFObjs struct {
	Events *ebpf.Map     `ebpf:"events"`
	Heap   *ebpf.Map     `ebpf:"heap"`
	Drops  *ebpf.Map     `ebpf:"drops"`
	Exec   *ebpf.Program `ebpf:"tp_btf_exec"`
	Fork   *ebpf.Program `ebpf:"tp_btf_fork"`
	Exit   *ebpf.Program `ebpf:"tp_btf_exit"`
}

type rawTPObjs struct {
	Events *ebpf.Map     `ebpf:"events"`
	Heap   *ebpf.Map     `ebpf:"heap"`
	Drops  *ebpf.Map     `ebpf:"drops"`
	Exec   *ebpf.Program `ebpf:"raw_tp_exec"`
	Fork   *ebpf.Program `ebpf:"raw_tp_fork"`
	Exit   *ebpf.Program `ebpf:"raw_tp_exit"`
}

// Open probes the kernel, loads the programs and attaches them. The error
// wraps ebpf.ErrNotSupported when the kernel cannot run the sensor.
func Open(opts Options) (*Sensor, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return sensor.OpenBest("process sensor", opts.ForceRawTP, func(mode string) (*Sensor, error) { return openMode(opts, mode) })
}

func openMode(opts Options, mode string) (*Sensor, error) {
	spec, err := loadProcess()
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("possible cpus: %w", err)
	}
	spec.Maps["heap"].MaxEntries = uint32(ncpu)
	spec.Maps["events"].MaxEntries = uint32(opts.RingBytes)
	if err := spec.Variables["args_max"].Set(uint32(opts.ArgsMax)); err != nil {
		return nil, fmt.Errorf("set args_max: %w", err)
	}
	forkImage := uint8(1)
	if opts.LeanFork {
		forkImage = 0
	}
	if err := spec.Variables["fork_image"].Set(forkImage); err != nil {
		return nil, fmt.Errorf("set fork_image: %w", err)
	}
	if err := spec.Variables["wakeup_bytes"].Set(uint64(opts.RingBytes / 16)); err != nil {
		return nil, fmt.Errorf("set wakeup_bytes: %w", err)
	}

	s := &Sensor{mode: mode, poll: opts.Poll}
	switch mode {
	case ModeTPBTF:
		var o tpBTFObjs
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return nil, fmt.Errorf("load %s programs: %w", mode, err)
		}
		s.objs = loaded(o)
	default:
		var o rawTPObjs
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return nil, fmt.Errorf("load %s programs: %w", mode, err)
		}
		s.objs = loaded(o)
	}
	// The reader listens before the first program runs: a wake-up sent
	// before it listened would be lost until the poll timer.
	s.rd, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ring reader: %w", err)
	}
	progs := [3]*ebpf.Program{s.objs.Exec, s.objs.Fork, s.objs.Exit}
	for i, p := range progs {
		var l link.Link
		var err error
		if mode == ModeTPBTF {
			l, err = link.AttachTracing(link.TracingOptions{Program: p})
		} else {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: hookNames[i], Program: p})
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attach %s/%s: %w", mode, hookNames[i], err)
		}
		s.links = append(s.links, l)
		s.hooks = append(s.hooks, mode+"/"+hookNames[i])
	}
	return s, nil
}

// Run reads events until ctx is done, then delivers what is still in the
// ring and returns nil; emit is called from this goroutine only.
func (s *Sensor) Run(ctx context.Context, emit func(sensor.ProcessEvent)) error {
	if emit == nil {
		return errors.New("process sensor: Run needs an emit function")
	}
	if !s.runMu.TryLock() {
		return errors.New("process sensor: Run already running")
	}
	defer s.runMu.Unlock()

	stop := context.AfterFunc(ctx, func() { _ = s.rd.Flush() })
	defer stop()

	var rec ringbuf.Record
	var ev sensor.ProcessEvent
	s.rd.SetDeadline(time.Now().Add(s.poll))
	for {
		err := s.rd.ReadInto(&rec)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The ring did not wake us: everything queued was read.
			s.rd.SetDeadline(time.Now().Add(s.poll))
			continue
		case errors.Is(err, ringbuf.ErrFlushed):
			if ctx.Err() != nil {
				return nil
			}
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("process sensor: read ring: %w", err)
		}
		if err := decode(rec.RawSample, &ev); err != nil {
			s.malformed.Add(1)
			continue
		}
		s.events[ev.Kind-1].Add(1)
		emit(ev)
	}
}

// Stats reports the mode, the attached hooks, delivered events and drops.
func (s *Sensor) Stats() sensor.Stats {
	st := sensor.Stats{
		Mode:    s.mode,
		Hooks:   append([]string(nil), s.hooks...),
		Events:  make(map[string]uint64, len(hookNames)),
		Dropped: make(map[string]uint64, len(hookNames)+1),
	}
	for i, name := range hookNames {
		st.Events[name] = s.events[i].Load()
		st.Dropped[name] = 0
	}
	sensor.SumDrops(s.objs.Drops, hookNames[:], st.Dropped)
	if n := s.malformed.Load(); n > 0 {
		st.Dropped["malformed"] = n
	}
	return st
}

// Close detaches the programs and frees the maps; a running Run returns.
func (s *Sensor) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = sensor.Teardown("process sensor", s.links, s.rd, &s.runMu, s.objs.close)
	})
	return s.closeErr
}
