package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultDataDir is where the agent keeps its identity and spool.
const DefaultDataDir = "/var/lib/mamori-agent"

// Config configures the agent runtime. Zero values take the defaults named on
// each field; Validate fills them in and checks the result once, at start.
type Config struct {
	// DataDir holds identity, keys, spool and the status socket (default
	// DefaultDataDir). The agent must already be enrolled in it.
	DataDir string

	// SpoolMaxBytes is the spool's disk budget (default 512 MiB); beyond
	// it the oldest data is dropped and reported.
	SpoolMaxBytes int64
	// SpoolSegmentBytes is the size of one spool segment (default 8 MiB).
	SpoolSegmentBytes int64
	// SpoolSyncInterval is how often appends are fsync'd (default 1 s).
	SpoolSyncInterval time.Duration

	// BatchRecords caps the records per batch (default 5000).
	BatchRecords int
	// BatchBytes caps a batch's uncompressed record bytes (default 4 MiB).
	BatchBytes int
	// BatchInterval is the longest an event waits in the spool before a
	// send is attempted (default 1 s).
	BatchInterval time.Duration
	// HeartbeatInterval is how often an idle agent reports status (default 30 s).
	HeartbeatInterval time.Duration
	// StatusInterval is how often status rides along with a batch (default 30 s).
	StatusInterval time.Duration
	// ShutdownTimeout bounds the last send on SIGTERM (default 5 s).
	ShutdownTimeout time.Duration

	// QueueLen bounds the queue between the sensor and the spool writer
	// (default 65536 events); overflow is counted and reported.
	QueueLen int
	// AppendInterval is how long the spool writer gathers events into one
	// append (default 20 ms). Shorter means more wake-ups of the agent for
	// every busy second of the host; the sensor's own ring already holds an
	// event up to 50 ms on a quiet host.
	AppendInterval time.Duration

	// HashWait is how long an exec event waits for its executable's hash
	// before it is sent with status "pending" (default 50 ms).
	HashWait time.Duration
	// HashMaxSize is the largest executable hashed (default 256 MiB).
	HashMaxSize int64

	// RingBytes is the sensor's ring buffer size (default 8 MiB).
	RingBytes int
	// NoSensor runs without the eBPF sensor (status sensor_mode "none").
	NoSensor bool

	// Logger receives the agent's logs (default slog.Default()).
	Logger *slog.Logger
}

// Validate fills in defaults and checks every field, naming the key and value
// of the first problem.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(c.validateSpool(), c.validateBatch(), c.validatePipeline())
}

func (c *Config) validateSpool() error {
	def64(&c.SpoolMaxBytes, 512<<20)
	def64(&c.SpoolSegmentBytes, 8<<20)
	defDur(&c.SpoolSyncInterval, time.Second)
	switch {
	case c.SpoolMaxBytes < 1<<20:
		return fmt.Errorf("config: spool_max_bytes %d: want at least 1 MiB", c.SpoolMaxBytes)
	case c.SpoolSegmentBytes < 64<<10 || c.SpoolSegmentBytes > c.SpoolMaxBytes/2:
		return fmt.Errorf("config: spool_segment_bytes %d: want 64 KiB to half of spool_max_bytes (%d)", c.SpoolSegmentBytes, c.SpoolMaxBytes)
	case c.SpoolSyncInterval < 0 || c.SpoolSyncInterval > time.Minute:
		return fmt.Errorf("config: spool_sync_interval %v: want 0 to 1m", c.SpoolSyncInterval)
	}
	return nil
}

func (c *Config) validateBatch() error {
	defInt(&c.BatchRecords, 5000)
	defInt(&c.BatchBytes, 4<<20)
	defDur(&c.BatchInterval, time.Second)
	defDur(&c.HeartbeatInterval, 30*time.Second)
	defDur(&c.StatusInterval, 30*time.Second)
	defDur(&c.ShutdownTimeout, 5*time.Second)
	switch {
	case c.BatchRecords < 1 || c.BatchRecords > maxBatchRecords:
		return fmt.Errorf("config: batch_records %d: want 1 to %d", c.BatchRecords, maxBatchRecords)
	case c.BatchBytes < 64<<10 || c.BatchBytes > maxBatchBytes:
		return fmt.Errorf("config: batch_bytes %d: want 64 KiB to %d", c.BatchBytes, maxBatchBytes)
	case c.BatchInterval < 10*time.Millisecond || c.BatchInterval > time.Minute:
		return fmt.Errorf("config: batch_interval %v: want 10ms to 1m", c.BatchInterval)
	case c.HeartbeatInterval < 100*time.Millisecond:
		return fmt.Errorf("config: heartbeat_interval %v: want at least 100ms", c.HeartbeatInterval)
	case c.StatusInterval < 100*time.Millisecond:
		return fmt.Errorf("config: status_interval %v: want at least 100ms", c.StatusInterval)
	case c.ShutdownTimeout > 5*time.Minute:
		return fmt.Errorf("config: shutdown_timeout %v: want at most 5m", c.ShutdownTimeout)
	}
	return nil
}

func (c *Config) validatePipeline() error {
	defInt(&c.QueueLen, 65536)
	defDur(&c.AppendInterval, 20*time.Millisecond)
	defDur(&c.HashWait, 50*time.Millisecond)
	def64(&c.HashMaxSize, 256<<20)
	defInt(&c.RingBytes, 8<<20)
	switch {
	case c.QueueLen < 16:
		return fmt.Errorf("config: queue_len %d: want at least 16", c.QueueLen)
	case c.AppendInterval > time.Second:
		return fmt.Errorf("config: append_interval %v: want at most 1s", c.AppendInterval)
	case c.HashWait > 10*time.Second:
		return fmt.Errorf("config: hash_wait %v: want at most 10s", c.HashWait)
	case c.RingBytes < 4096 || c.RingBytes&(c.RingBytes-1) != 0:
		return fmt.Errorf("config: ring_bytes %d: want a power of two of at least 4096", c.RingBytes)
	}
	return nil
}

// Limits kept below wire's so a batch is never refused for size.
const (
	maxBatchRecords = 10000
	maxBatchBytes   = 16 << 20
)

func def64(p *int64, d int64) {
	if *p == 0 {
		*p = d
	}
}

func defInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

func defDur(p *time.Duration, d time.Duration) {
	if *p == 0 {
		*p = d
	}
}
