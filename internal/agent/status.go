package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/wire"
)

// ErrNotRunning means no agent answers on the data directory's socket.
var ErrNotRunning = errors.New("agent not running")

// ErrAlreadyRunning means another agent already serves this data directory.
var ErrAlreadyRunning = errors.New("another agent is already running on this data directory")

// maxStatusBytes bounds what QueryStatus reads from the socket.
const maxStatusBytes = 1 << 20

// listenStatus binds DIR/agent.sock (0600). A live socket means another agent
// owns the directory (and its spool): refuse. A stale one is removed.
func listenStatus(dataDir string) (net.Listener, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dataDir, SocketFile)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w (%s)", ErrAlreadyRunning, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale status socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	return ln, nil
}

// serveStatus answers every connection with one JSON status and closes it,
// until ctx is done.
func serveStatus(ctx context.Context, ln net.Listener, status func() wire.AgentStatus) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("status socket: %w", err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_ = json.NewEncoder(c).Encode(status())
		c.Close()
	}
}

// QueryStatus asks the agent running on dataDir for its status; it wraps
// ErrNotRunning when none answers.
func QueryStatus(dataDir string) (wire.AgentStatus, error) {
	var st wire.AgentStatus
	path := filepath.Join(dataDir, SocketFile)
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return st, fmt.Errorf("%w (%s: %v)", ErrNotRunning, path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(io.LimitReader(c, maxStatusBytes))
	if err != nil {
		return st, fmt.Errorf("read status: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decode status: %w", err)
	}
	return st, nil
}

// FormatStatus writes st for a human.
func FormatStatus(w io.Writer, st wire.AgentStatus) {
	p := func(k, format string, a ...any) {
		fmt.Fprintf(w, "%-14s "+format+"\n", append([]any{k + ":"}, a...)...)
	}
	p("host", "%s (%s), tenant %s", st.Hostname, st.HostID, st.Tenant)
	p("version", "%s, started %s, boot %s", st.Version, st.Started, st.BootID)
	sensorLine := st.SensorMode
	if st.SensorError != "" {
		sensorLine += " (" + st.SensorError + ")"
	}
	p("sensor", "%s", sensorLine)
	p("hooks", "%s", orNone(strings.Join(st.Hooks, ", ")))
	p("events", "%d total, %.1f/s", st.EventsTotal, st.EventsPerS)
	p("ring drops", "%s", fmtCounts(st.RingDropped))
	if l := st.Loss; l != nil {
		p("other loss", "queue %d, rejected by server %d, spool overflow %d, spool corrupt %d",
			l.QueueDropped, l.Rejected, l.SpoolDropped, l.SpoolCorrupt)
	}
	s := st.Spool
	p("spool", "%s in %d segments, %d pending (seq %d, acked %d), %d dropped, %d corrupt",
		fmtBytes(s.Bytes), s.Segments, s.Pending, s.LastSeq, s.AckedSeq, s.Dropped, s.Corrupt)
	c := st.Connection
	conn := c.State + " to " + c.Server
	if c.LastAck != "" {
		conn += ", last ack " + c.LastAck
	}
	if c.Via != "" {
		conn += " (" + c.Via + ")"
	}
	p("connection", "%s", conn)
	for i, e := range c.Endpoints {
		line := e.State
		if e.InUse {
			line += ", in use"
		}
		if e.State == "down" {
			line += fmt.Sprintf(", %d failures, retry %s: %s", e.Failures, e.NextRetry, e.LastError)
		}
		p(fmt.Sprintf("endpoint %d", i+1), "%s: %s", e.Endpoint, line)
	}
	if c.LastError != "" {
		p("last error", "%s", c.LastError)
	}
	if len(st.Hash) > 0 {
		p("hash cache", "%s", fmtCounts(st.Hash))
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func fmtCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func writeFile0600(path string, b []byte) error { return pki.WriteFile(path, b) }
