package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server"
	"github.com/mamori-edr/mamori/internal/wire"
)

// The hand-written encoder must produce exactly what the server decodes.
func TestEncodeBatchRoundTripsThroughServerDecoder(t *testing.T) {
	var recs []wire.Record
	for i := uint64(1); i <= 3; i++ {
		ev := schema.Event{Schema: schema.Version, BootID: "b", Time: time.Unix(1700000000, int64(i)).UTC(), Type: schema.ProcessExec,
			Process: &schema.Process{EntityID: "b:1:2", PID: 1, Exe: "/bin/\"quoted\"\n", Args: []string{"a", "ü"}}}
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, wire.Record{Seq: i * 10, Event: raw})
	}
	in := wire.Batch{BootID: `boot"id`, Records: recs,
		Loss:   &schema.Loss{SpoolDropped: 4, RingDropped: map[string]uint64{"exec": 2}},
		Status: &wire.AgentStatus{Version: "v", SensorMode: "tp_btf"}}
	body, err := EncodeBatch(in)
	if err != nil {
		t.Fatal(err)
	}
	got, events, err := server.DecodeBatch(bytes.NewReader(body), "gzip", "tenant", "host")
	if err != nil {
		t.Fatalf("server rejects the encoding: %v", err)
	}
	if got.BootID != in.BootID || !reflect.DeepEqual(got.Loss, in.Loss) || got.Status.SensorMode != "tp_btf" {
		t.Errorf("batch header: got %+v", got)
	}
	if len(events) != 3 || events[2].Seq != 30 || events[0].Process.Exe != "/bin/\"quoted\"\n" || events[1].HostID != "host" {
		t.Errorf("events: %+v", events)
	}

	// No loss or status: the keys are left out, not sent as null.
	body, err = EncodeBatch(wire.Batch{BootID: "b", Records: recs[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := server.DecodeBatch(bytes.NewReader(body), "gzip", "t", "h"); err != nil || got.Loss != nil || got.Status != nil {
		t.Errorf("minimal batch: %+v %v", got, err)
	}
}

func TestEncodeBatchLimits(t *testing.T) {
	if _, err := EncodeBatch(wire.Batch{Records: make([]wire.Record, wire.MaxBatchRecords+1)}); !errors.Is(err, ErrBatchTooLarge) {
		t.Errorf("too many records: %v", err)
	}
	if _, err := EncodeBatch(wire.Batch{Records: []wire.Record{{Seq: 1}}}); err == nil {
		t.Error("a record without an event was encoded")
	}
	big := bytes.Repeat([]byte("x"), wire.MaxBatchDecompressed)
	if _, err := EncodeBatch(wire.Batch{Records: []wire.Record{{Seq: 1, Event: append(append([]byte(`"`), big...), '"')}}}); !errors.Is(err, ErrBatchTooLarge) {
		t.Errorf("oversized batch: %v", err)
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	ev, _ := json.Marshal(schema.Event{Schema: 1, BootID: "0123456789abcdef", Type: schema.ProcessExec,
		Process: &schema.Process{EntityID: "0123456789abcdef:4242:123456", Exe: "/usr/bin/true", Args: []string{"/usr/bin/true", "--some-flag", "value"},
			Hash: &schema.FileHash{SHA256: "f00d", MD5: "beef", Size: 1, Status: "ok"}}})
	recs := make([]wire.Record, 1000)
	for i := range recs {
		recs[i] = wire.Record{Seq: uint64(i + 1), Event: ev}
	}
	b.SetBytes(int64(len(ev) * len(recs)))
	for i := 0; i < b.N; i++ {
		if _, err := EncodeBatch(wire.Batch{BootID: "b", Records: recs}); err != nil {
			b.Fatal(err)
		}
	}
}
