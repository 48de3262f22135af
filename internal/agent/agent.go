// Package agent is the runtime of mamori-agent: it wires the kernel sensor,
// the process cache, the durable spool and the transport together, and serves
// the agent's status on a unix socket in its data directory.
//
// The trap: nothing downstream may slow the kernel sensor. The sensor's
// callback only hands events to a bounded queue; enrichment, hashing and disk
// writes happen on the writer goroutine, and every event lost on the way
// (queue overflow, spool refusal, server rejection) is counted and reported,
// never dropped silently.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-edr/mamori/internal/agent/hashcache"
	"github.com/mamori-edr/mamori/internal/agent/proc"
	"github.com/mamori-edr/mamori/internal/agent/sensor"
	"github.com/mamori-edr/mamori/internal/agent/sensor/process"
	"github.com/mamori-edr/mamori/internal/agent/spool"
	"github.com/mamori-edr/mamori/internal/agent/transport"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/version"
	"github.com/mamori-edr/mamori/internal/wire"
	"golang.org/x/sync/errgroup"
)

// Names inside the data directory.
const (
	SpoolDir   = "spool"
	SocketFile = "agent.sock"
	LossFile   = "loss.json"
)

// SensorModeNone is the sensor mode reported when no sensor runs.
const SensorModeNone = "none"

// revokedProbe is how often a revoked agent asks whether it was reinstated.
const revokedProbe = 5 * time.Minute

// appendChunk caps the events written by one spool append.
const appendChunk = 1024

// Agent is one running agent. Create it with New and start it with Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	client  *transport.Client
	id      transport.Identity
	host    transport.HostInfo
	started time.Time
	selfPID uint32

	bootID string
	hashes *hashcache.Cache
	procs  *proc.Cache
	spool  *spool.Spool

	raw  chan sensor.ProcessEvent
	late chan schema.Event

	kernelEvents   atomic.Uint64 // events the sensor delivered
	spooled        atomic.Uint64 // schema events appended to the spool
	queueDropped   atomic.Uint64 // lost between sensor and spool
	spooledThrough atomic.Int64  // unix ns of the newest event on disk
	rejected       atomic.Uint64 // refused by the server and skipped

	mu          sync.Mutex
	sensor      *process.Sensor
	sensorMode  string
	sensorErr   string
	hooks       []string
	ringDropped map[string]uint64
	eventsPerS  float64
	lossBase    persistedLoss // counters from earlier runs
	acts        actionsState  // response actions (actions.go)
	net         netState      // the network sensor (netsensor.go)
}

// persistedLoss is the part of Loss the agent itself must remember across
// restarts (the spool persists its own).
type persistedLoss struct {
	QueueDropped uint64 `json:"queue_dropped"`
	Rejected     uint64 `json:"rejected"`
}

// New validates cfg and loads the agent's identity; the data directory must
// already hold an enrollment (see transport.Enroll).
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := transport.NewClient(cfg.DataDir, transport.ClientOptions{})
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "agent"),
		client:     client,
		id:         client.Identity(),
		host:       transport.LocalHostInfo(),
		selfPID:    uint32(os.Getpid()),
		raw:        make(chan sensor.ProcessEvent, cfg.QueueLen),
		late:       make(chan schema.Event, 4096),
		sensorMode: SensorModeNone,
	}
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, LossFile)); err == nil {
		if err := json.Unmarshal(b, &a.lossBase); err != nil {
			return nil, fmt.Errorf("%s: %w", LossFile, err)
		}
	}
	return a, nil
}

// Run collects, spools and ships until ctx is cancelled, then stops the
// sensor, flushes everything into the spool, tries one last send (bounded by
// ShutdownTimeout) and closes the spool. It returns nil after a clean stop.
func (a *Agent) Run(ctx context.Context) (err error) {
	a.started = time.Now().UTC()
	defer a.client.Close()
	if a.bootID, err = proc.BootID(); err != nil {
		return fmt.Errorf("boot id: %w", err)
	}
	ln, err := listenStatus(a.cfg.DataDir)
	if err != nil {
		return err
	}
	defer func() {
		ln.Close()
		os.Remove(filepath.Join(a.cfg.DataDir, SocketFile))
	}()

	a.spool, err = spool.Open(filepath.Join(a.cfg.DataDir, SpoolDir), spool.Options{
		MaxBytes: a.cfg.SpoolMaxBytes, SegmentBytes: a.cfg.SpoolSegmentBytes, SyncInterval: a.cfg.SpoolSyncInterval,
	})
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if cerr := a.spool.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close spool: %w", cerr)
		}
		a.saveLoss()
	}()
	a.hashes = hashcache.New(hashcache.Options{MaxSize: a.cfg.HashMaxSize})
	defer a.hashes.Close()
	a.procs = proc.New(a.bootID, a.hashes, proc.Options{HashWait: a.cfg.HashWait})
	a.procs.SetLateSink(a.lateEvent)

	// The sensor is attached before the /proc snapshot, so a process born
	// while the snapshot runs is in the ring buffer, handled right after it:
	// no gap in lineage between the two.
	a.openSensor()
	a.openNetSensor()
	if err := a.snapshot(); err != nil {
		a.closeSensor()
		a.closeNetSensor()
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	pipelineDone := make(chan struct{})
	g.Go(func() error { return a.runSensor(gctx) })
	g.Go(func() error { return a.runNetSensor(gctx) })
	g.Go(func() error { defer close(pipelineDone); return a.writeLoop() })
	g.Go(func() error { return a.sendLoop(gctx, pipelineDone) })
	g.Go(func() error { return a.meter(gctx) })
	g.Go(func() error { return a.runActions(gctx) })
	g.Go(func() error { return serveStatus(gctx, ln, a.Status) })
	a.log.Info("agent running", "host_id", a.id.HostID, "tenant", a.id.Tenant, "server", a.id.Server,
		"sensor_mode", a.sensorModeNow(), "data", a.cfg.DataDir)
	err = g.Wait()
	a.log.Info("agent stopped", "spool_pending", a.spool.Stats().Pending, "events", a.spooled.Load())
	return err
}

func (a *Agent) openSensor() {
	if a.cfg.NoSensor {
		a.setSensorDown("disabled by configuration")
		return
	}
	// LeanFork: the kernel skips exe/argv/cwd on fork (0.6 µs instead of
	// 2.6 µs per fork); the process cache copies them from the parent, which
	// is what the child runs until it execs.
	s, err := process.Open(process.Options{RingBytes: a.cfg.RingBytes, LeanFork: true})
	if err != nil {
		a.log.Error("sensor unavailable: running without kernel events", "err", err)
		a.setSensorDown(err.Error())
		return
	}
	st := s.Stats()
	a.mu.Lock()
	a.sensor, a.sensorMode, a.hooks, a.sensorErr = s, st.Mode, st.Hooks, ""
	a.mu.Unlock()
}

func (a *Agent) setSensorDown(reason string) {
	a.mu.Lock()
	a.sensorMode, a.sensorErr, a.hooks = SensorModeNone, reason, nil
	a.mu.Unlock()
}

func (a *Agent) closeSensor() {
	a.mu.Lock()
	s := a.sensor
	a.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

func (a *Agent) sensorModeNow() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sensorMode
}

// snapshot spools one process_snapshot event per running process, so lineage
// is complete from the first second.
func (a *Agent) snapshot() error {
	evs, err := a.procs.Snapshot()
	if err != nil {
		return fmt.Errorf("process snapshot: %w", err)
	}
	for len(evs) > 0 {
		n := min(len(evs), appendChunk)
		payloads := make([][]byte, 0, n)
		for i := range evs[:n] {
			payloads = append(payloads, evs[i].AppendJSON(nil))
		}
		if _, err := a.spool.Append(payloads...); err != nil {
			return fmt.Errorf("spool snapshot: %w", err)
		}
		a.spooled.Add(uint64(n))
		evs = evs[n:]
	}
	return nil
}

// runSensor owns the sensor: it reads the ring buffer until ctx is done, then
// closes the sensor and the raw queue, which tells the writer to finish.
func (a *Agent) runSensor(ctx context.Context) error {
	defer close(a.raw)
	defer a.waitNet() // network events reach the late queue before the writer stops
	a.mu.Lock()
	s := a.sensor
	a.mu.Unlock()
	if s == nil {
		<-ctx.Done()
		return nil
	}
	err := s.Run(ctx, a.emit)
	a.updateSensorStats()
	s.Close()
	if err != nil && ctx.Err() == nil {
		// Keep shipping what we have; say why events stopped.
		a.log.Error("sensor stopped", "err", err)
		a.setSensorDown("sensor stopped: " + err.Error())
		a.mu.Lock()
		a.sensor = nil
		a.mu.Unlock()
		<-ctx.Done()
	}
	return nil
}

// emit runs on the sensor's goroutine for every kernel event: it must not
// block. The agent filters its own pid: it execs nothing in steady state, and
// reporting its own exit or threads would only feed back into the stream.
func (a *Agent) emit(ev sensor.ProcessEvent) {
	a.kernelEvents.Add(1)
	if ev.PID == a.selfPID {
		return
	}
	select {
	case a.raw <- ev:
	default:
		a.queueDropped.Add(1)
	}
}

// lateEvent receives process_hash events from hashing workers.
func (a *Agent) lateEvent(ev schema.Event) {
	select {
	case a.late <- ev:
	default:
		a.queueDropped.Add(1)
	}
}

// writeLoop owns enrichment and spool appends. It gathers events for up to
// AppendInterval into one append, and returns once the raw queue is closed
// and drained.
func (a *Agent) writeLoop() error {
	batch := make([][]byte, 0, appendChunk)
	// enc backs batch's payloads until the next flush: the spool copies
	// them, so one buffer serves every append without garbage.
	var enc []byte
	var newest int64 // time of the newest event in batch, unix ns
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := a.spool.Append(batch...); err != nil {
			a.queueDropped.Add(uint64(len(batch)))
			a.log.Error("spool append failed: events lost", "events", len(batch), "err", err)
		} else {
			a.spooled.Add(uint64(len(batch)))
			if newest > a.spooledThrough.Load() {
				a.spooledThrough.Store(newest)
			}
		}
		batch, enc = batch[:0], enc[:0]
	}
	add := func(evs ...schema.Event) {
		for i := range evs {
			start := len(enc)
			enc = evs[i].AppendJSON(enc)
			batch = append(batch, enc[start:len(enc):len(enc)])
			newest = max(newest, evs[i].Time.UnixNano())
		}
	}
	drainLate := func() {
		for {
			select {
			case ev := <-a.late:
				add(ev)
			default:
				return
			}
		}
	}
	// Loss is also written into the event stream as agent_loss events, so it
	// is stored with a seq like everything else and an analyst finds it in
	// the host's timeline, not only in its status.
	var lastLoss schema.Loss
	lossEvent := func() {
		l := a.Loss()
		if lossTotal(l) == 0 || reflect.DeepEqual(l, lastLoss) {
			return
		}
		lastLoss = l
		add(schema.Event{Schema: schema.Version, BootID: a.bootID, Time: time.Now().UTC(), Type: schema.AgentLoss, Loss: &l})
	}
	lossTick := time.NewTicker(time.Second)
	defer lossTick.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		// Wait for the first event of the next append.
		select {
		case ev, ok := <-a.raw:
			if !ok {
				drainLate()
				lossEvent()
				flush()
				return a.spool.Sync()
			}
			add(a.procs.Handle(ev)...)
		case ev := <-a.late:
			add(ev)
		case <-lossTick.C:
			lossEvent()
			flush()
			continue
		}
		timer.Reset(a.cfg.AppendInterval)
	gather:
		for len(batch) < appendChunk {
			select {
			case ev, ok := <-a.raw:
				if !ok {
					timer.Stop()
					drainLate()
					lossEvent()
					flush()
					return a.spool.Sync()
				}
				add(a.procs.Handle(ev)...)
			case ev := <-a.late:
				add(ev)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		flush()
	}
}

// sendLoop owns the transport. It wakes on spool appends (sending at once
// when a full batch is ready, else at most BatchInterval later), heartbeats
// when idle, and on shutdown waits for the writer to finish, then makes one
// last bounded attempt to empty the spool.
func (a *Agent) sendLoop(ctx context.Context, pipelineDone <-chan struct{}) error {
	tick := time.NewTicker(a.cfg.BatchInterval)
	defer tick.Stop()
	var lastSend, lastContact, lastStatus time.Time
	var sentLoss schema.Loss
	notify := a.spool.Notify()

	attempt := func(ctx context.Context) {
		if a.client.Revoked() && time.Since(lastContact) < revokedProbe {
			return // keep spooling; do not hammer a server that refused us
		}
		if a.client.Revoked() {
			lastContact = time.Now()
			if err := a.client.Heartbeat(ctx, wire.Heartbeat{BootID: a.bootID, Status: a.statusPtr()}); err != nil {
				return
			}
			a.log.Info("server accepts the agent again")
		}
		sent, err := a.sendPending(ctx, &sentLoss, &lastStatus)
		lastSend = time.Now()
		if sent {
			lastContact = lastSend
		}
		switch {
		case errors.Is(err, transport.ErrRevoked):
			lastContact = time.Now()
			a.log.Error("server refused the agent certificate: sending stopped, spooling continues", "err", err)
		case err != nil && ctx.Err() == nil:
			a.log.Warn("send failed", "err", err)
		}
		if err == nil && time.Since(lastContact) >= a.cfg.HeartbeatInterval {
			if err := a.client.Heartbeat(ctx, wire.Heartbeat{BootID: a.bootID, Status: a.statusPtr()}); err == nil {
				lastContact, lastStatus = time.Now(), time.Now()
			} else if errors.Is(err, transport.ErrRevoked) {
				lastContact = time.Now()
			}
		}
	}

	// A spool append wakes the sender to see whether a full batch is ready;
	// when it is not, appends are ignored for notifyPause, so a busy host
	// does not wake the sender for every append.
	const notifyPause = 100 * time.Millisecond
	notifyCh := notify
	resume := time.NewTimer(time.Hour)
	resume.Stop()
	defer resume.Stop()

	attempt(ctx) // reach the server at once, so status says "connected"
	for {
		select {
		case <-ctx.Done():
			<-pipelineDone
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
			defer cancel()
			if !a.client.Revoked() {
				if _, err := a.sendPending(fctx, &sentLoss, &lastStatus); err != nil {
					a.log.Warn("last send before exit incomplete: data stays in the spool", "err", err,
						"pending", a.spool.Stats().Pending)
				}
			}
			return nil
		case <-notifyCh:
			if a.spool.Stats().Pending < uint64(a.cfg.BatchRecords) && time.Since(lastSend) < a.cfg.BatchInterval {
				notifyCh = nil
				resume.Reset(notifyPause)
				continue
			}
		case <-resume.C:
			notifyCh = notify
			continue
		case <-tick.C:
		}
		attempt(ctx)
	}
}

// sendPending delivers spooled records until the spool is empty, attaching
// loss whenever it changed and status every StatusInterval. It reports
// whether the server answered at least once.
func (a *Agent) sendPending(ctx context.Context, sentLoss *schema.Loss, lastStatus *time.Time) (bool, error) {
	answered := false
	for {
		acked := a.spool.Acked()
		recs, err := a.spool.Read(acked, a.cfg.BatchRecords, a.cfg.BatchBytes)
		if err != nil {
			return answered, fmt.Errorf("read spool: %w", err)
		}
		b := wire.Batch{BootID: a.bootID, Records: recs}
		loss := a.Loss()
		if !reflect.DeepEqual(loss, *sentLoss) {
			b.Loss = &loss
		}
		if time.Since(*lastStatus) >= a.cfg.StatusInterval {
			b.Status = a.statusPtr()
		}
		if len(recs) == 0 && b.Loss == nil {
			return answered, nil
		}
		if len(recs) == 0 {
			b.Status = a.statusPtr()
		}
		res, err := a.client.Deliver(ctx, b)
		if n := len(res.Rejected); n > 0 {
			a.rejected.Add(uint64(n))
			for i, seq := range res.Rejected {
				a.log.Error("server rejected a record: skipped and counted as lost", "seq", seq, "reason", res.RejectedErrs[i])
			}
			a.saveLoss()
		}
		if res.AckedSeq > acked {
			if aerr := a.spool.Ack(res.AckedSeq); aerr != nil {
				return true, fmt.Errorf("ack spool: %w", aerr)
			}
		}
		if err != nil {
			return answered, err
		}
		answered = true
		if b.Loss != nil {
			*sentLoss = *b.Loss
		}
		if b.Status != nil {
			*lastStatus = time.Now()
		}
		if len(recs) == 0 {
			return true, nil
		}
		if res.AckedSeq < recs[len(recs)-1].Seq {
			// The server stored less than we sent; try again on the next tick.
			return true, fmt.Errorf("server acked seq %d of a batch ending at %d", res.AckedSeq, recs[len(recs)-1].Seq)
		}
	}
}

// meter refreshes events/s and the sensor counters once a second.
func (a *Agent) meter(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prev, prevT := a.kernelEvents.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			cur := a.kernelEvents.Load()
			rate := float64(cur-prev) / now.Sub(prevT).Seconds()
			prev, prevT = cur, now
			a.mu.Lock()
			a.eventsPerS = 0.5*a.eventsPerS + 0.5*rate
			a.mu.Unlock()
			a.updateSensorStats()
		}
	}
}

func (a *Agent) updateSensorStats() {
	a.updateNetStats()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sensor == nil {
		return
	}
	st := a.sensor.Stats()
	a.hooks = st.Hooks
	a.ringDropped = st.Dropped
}

// Loss returns everything lost so far: ring-buffer drops, spool overflow and
// corruption, the agent's queue and records the server refused.
func (a *Agent) Loss() schema.Loss {
	l := a.spool.Loss()
	a.mu.Lock()
	if len(a.ringDropped) > 0 {
		l.RingDropped = make(map[string]uint64, len(a.ringDropped))
		for k, v := range a.ringDropped {
			l.RingDropped[k] = v
		}
	}
	for k, v := range a.net.dropped {
		if v == 0 && l.RingDropped == nil {
			continue
		}
		if l.RingDropped == nil {
			l.RingDropped = make(map[string]uint64, len(a.net.dropped))
		}
		l.RingDropped[k] = v
	}
	a.mu.Unlock()
	l.QueueDropped = a.lossBase.QueueDropped + a.queueDropped.Load()
	l.Rejected = a.lossBase.Rejected + a.rejected.Load()
	return l
}

// lossTotal adds up every loss counter.
func lossTotal(l schema.Loss) uint64 {
	n := l.SpoolDropped + l.SpoolCorrupt + l.QueueDropped + l.Rejected
	for _, v := range l.RingDropped {
		n += v
	}
	return n
}

func (a *Agent) saveLoss() {
	l := persistedLoss{
		QueueDropped: a.lossBase.QueueDropped + a.queueDropped.Load(),
		Rejected:     a.lossBase.Rejected + a.rejected.Load(),
	}
	if l == (persistedLoss{}) {
		return
	}
	b, _ := json.Marshal(l)
	if err := writeFile0600(filepath.Join(a.cfg.DataDir, LossFile), b); err != nil {
		a.log.Warn("save loss counters", "err", err)
	}
}

// Status returns what `mamori-agent status` shows.
func (a *Agent) Status() wire.AgentStatus {
	loss := a.Loss()
	a.mu.Lock()
	st := wire.AgentStatus{
		Version:     version.Version,
		HostID:      a.id.HostID,
		Tenant:      a.id.Tenant,
		Hostname:    a.host.Hostname,
		BootID:      a.bootID,
		Started:     a.started.Format(time.RFC3339),
		SensorMode:  a.sensorMode,
		Hooks:       append([]string(nil), a.hooks...),
		EventsTotal: a.kernelEvents.Load(),
		EventsPerS:  a.eventsPerS,
		RingDropped: loss.RingDropped,
		SensorError: a.sensorErr,
	}
	st.Hooks, st.SensorError = a.netStatusLocked(st.Hooks, st.SensorError)
	a.mu.Unlock()
	st.Loss = &loss
	if ns := a.spooledThrough.Load(); ns > 0 {
		st.SpooledThrough = time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
	}
	if a.spool != nil {
		st.Spool = a.spool.Stats()
	}
	st.Connection = a.client.Status()
	st.Isolation = a.isolationStatus()
	if a.hashes != nil {
		st.Hash = a.hashes.Stats()
	}
	return st
}

func (a *Agent) statusPtr() *wire.AgentStatus {
	st := a.Status()
	return &st
}
