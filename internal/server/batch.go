package server

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/wire"
)

// errDecompressedTooLarge is returned when a batch inflates past wire.MaxBatchDecompressed.
var errDecompressedTooLarge = fmt.Errorf("batch larger than %d bytes after decompression", wire.MaxBatchDecompressed)

// capReader fails with errDecompressedTooLarge once more than n bytes were read,
// so a zip bomb stops at the limit instead of filling memory.
type capReader struct {
	r io.Reader
	n int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		// Probe one byte: exactly at the limit with nothing left is fine.
		var one [1]byte
		if k, _ := c.r.Read(one[:]); k > 0 {
			return 0, errDecompressedTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	k, err := c.r.Read(p)
	c.n -= int64(k)
	return k, err
}

// DecodeBatch reads a batch body (Content-Encoding "gzip" or identity) and
// returns its records as events stamped with tenant, host and seq. Every
// error is an *apiError carrying the status and code for the agent: 413 for
// any size limit, 400 for malformed bodies and for a bad record (naming its seq).
func DecodeBatch(body io.Reader, contentEncoding, tenant, hostID string) (wire.Batch, []schema.Event, error) {
	var b wire.Batch
	var r io.Reader = body
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return b, nil, batchErr(err, "gzip header")
		}
		defer zr.Close()
		r = zr
	case "", "identity":
	default:
		return b, nil, errorf(http.StatusUnsupportedMediaType, wire.CodeBadBatch, "content encoding %q: want gzip", contentEncoding)
	}
	cr := &capReader{r: r, n: wire.MaxBatchDecompressed}
	dec := json.NewDecoder(cr)
	if err := dec.Decode(&b); err != nil {
		return b, nil, batchErr(err, "batch")
	}
	// Read to the end so trailing data and a truncated or corrupt gzip
	// stream (checked at EOF) are caught.
	rest, err := io.ReadAll(io.MultiReader(dec.Buffered(), cr))
	if err != nil {
		return b, nil, batchErr(err, "batch")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return b, nil, errorf(http.StatusBadRequest, wire.CodeBadBatch, "batch: trailing data after the JSON object")
	}
	events, err := validateBatch(&b, tenant, hostID)
	return b, events, err
}

func batchErr(err error, what string) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errDecompressedTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "%v", err)
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "batch larger than %d bytes compressed", wire.MaxBatchCompressed)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, wire.CodeBadBatch, "%s: truncated body", what)
	}
	return errorf(http.StatusBadRequest, wire.CodeBadBatch, "%s: %v", what, err)
}

// maxBootIDLen bounds strings the agent supplies that are stored verbatim.
const maxBootIDLen = 128

func validateBatch(b *wire.Batch, tenant, hostID string) ([]schema.Event, error) {
	if len(b.Records) > wire.MaxBatchRecords {
		return nil, errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "batch has %d records, limit %d", len(b.Records), wire.MaxBatchRecords)
	}
	if len(b.BootID) > maxBootIDLen {
		return nil, errorf(http.StatusBadRequest, wire.CodeBadBatch, "boot_id longer than %d bytes", maxBootIDLen)
	}
	events := make([]schema.Event, 0, len(b.Records))
	var prev uint64
	for i, rec := range b.Records {
		if rec.Seq == 0 {
			return nil, recordErr(rec.Seq, "record %d: seq 0 (sequences start at 1)", i)
		}
		if i > 0 && rec.Seq <= prev {
			return nil, errorf(http.StatusBadRequest, wire.CodeBadBatch, "record %d: seq %d after %d: records must be in increasing seq order", i, rec.Seq, prev)
		}
		prev = rec.Seq
		ev, err := decodeEvent(rec.Event)
		if err != nil {
			return nil, recordErr(rec.Seq, "record seq %d: %v", rec.Seq, err)
		}
		ev.Tenant, ev.HostID, ev.Seq = tenant, hostID, rec.Seq
		events = append(events, ev)
	}
	return events, nil
}

func recordErr(seq uint64, format string, args ...any) error {
	e := errorf(http.StatusBadRequest, wire.CodeBadRecord, format, args...)
	e.seq = seq
	return e
}

// decodeEvent decodes and validates one event.
func decodeEvent(raw json.RawMessage) (schema.Event, error) {
	var ev schema.Event
	if len(bytes.TrimSpace(raw)) == 0 {
		return ev, errors.New("event missing")
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return ev, fmt.Errorf("event: %w", err)
	}
	if ev.Schema != schema.Version {
		return ev, fmt.Errorf("event schema version %d: this server reads version %d", ev.Schema, schema.Version)
	}
	if !ev.Type.Valid() {
		return ev, fmt.Errorf("event type %q: unknown", ev.Type)
	}
	if ev.Time.IsZero() {
		return ev, errors.New("event time missing")
	}
	// The store keys time as Unix nanoseconds, defined for these years only.
	if y := ev.Time.Year(); y < 1678 || y > 2261 {
		return ev, fmt.Errorf("event time %s: out of range", ev.Time.Format(time.RFC3339))
	}
	if len(ev.BootID) > maxBootIDLen {
		return ev, fmt.Errorf("boot_id longer than %d bytes", maxBootIDLen)
	}
	switch ev.Type {
	case schema.AgentLoss:
		if ev.Loss == nil {
			return ev, errors.New("agent_loss event without loss")
		}
	default:
		if ev.Process == nil || ev.Process.EntityID == "" {
			return ev, fmt.Errorf("%s event without process.entity_id", ev.Type)
		}
	}
	return ev, nil
}
