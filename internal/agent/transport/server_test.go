package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/wire"
)

// realServer runs the real Mamori server in process on 127.0.0.1:0.
func realServer(t *testing.T, hostnames ...string) (*server.Server, *apiclient.Client) {
	t.Helper()
	dir := t.TempDir()
	srv, err := server.New(server.Options{DataDir: dir, Listen: "127.0.0.1:0", Hostnames: hostnames, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	admin, err := apiclient.FromDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := admin.Hosts(context.Background(), ""); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv, admin
}

func event(seq uint64, marker string) wire.Record {
	ev := schema.Event{Schema: schema.Version, BootID: "b1", Time: time.Now().UTC(), Type: schema.ProcessExec,
		Process: &schema.Process{EntityID: fmt.Sprintf("b1:%d:1", seq), PID: uint32(seq), Args: []string{"/bin/x", marker}}}
	b, _ := json.Marshal(ev)
	return wire.Record{Seq: seq, Event: b}
}

// Against the real server: enrollment, mTLS ingest, a poisoned record
// skipped alone, a reused token refused, revocation stopping the sender.
func TestRealServer(t *testing.T) {
	srv, admin := realServer(t)
	ctx := context.Background()
	tok, err := admin.CreateToken(ctx, api.TokenRequest{TTLSeconds: 60, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id, err := Enroll(ctx, srv.Info().URL, tok.Token, dir, HostInfo{Hostname: "t1"}, EnrollOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reused token refused", func(t *testing.T) {
		_, err := Enroll(ctx, srv.Info().URL, tok.Token, t.TempDir(), HostInfo{Hostname: "t2"}, EnrollOptions{})
		if !errors.Is(err, ErrEnrollRefused) {
			t.Fatalf("err = %v, want ErrEnrollRefused", err)
		}
		t.Log(err)
	})

	c, err := NewClient(dir, ClientOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("poisoned record skipped alone", func(t *testing.T) {
		var recs []wire.Record
		for s := uint64(1); s <= 20; s++ {
			recs = append(recs, event(s, "real-server"))
		}
		recs[9].Event = json.RawMessage(`{"schema":1,"type":"no_such_type","time":"2026-01-01T00:00:00Z"}`)
		res, err := c.Deliver(ctx, wire.Batch{BootID: "b1", Records: recs, Loss: &schema.Loss{}})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(res.Rejected) != "[10]" || res.AckedSeq != 20 || res.Stored != 19 {
			t.Fatalf("res = %+v", res)
		}
		evs, err := admin.Events(ctx, apiclient.EventFilter{Where: []string{"process.args~real-server"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 19 || evs[0].HostID != id.HostID {
			t.Fatalf("stored %d events (host %q), want 19 of %q", len(evs), evs[0].HostID, id.HostID)
		}
		// A retry of the same batch is acknowledged without duplicates.
		recs[9] = event(10, "real-server")
		res, err = c.Deliver(ctx, wire.Batch{BootID: "b1", Records: recs})
		if err != nil || res.Stored != 0 || res.Duplicates != 20 {
			t.Fatalf("retry: res %+v err %v", res, err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		if _, err := admin.RevokeHost(ctx, id.HostID, ""); err != nil {
			t.Fatal(err)
		}
		res, err := c.Deliver(ctx, wire.Batch{BootID: "b1", Records: []wire.Record{event(21, "after")}})
		if !errors.Is(err, ErrRevoked) || res.AckedSeq != 0 {
			t.Fatalf("res %+v err %v, want ErrRevoked and no ack", res, err)
		}
		if st := c.Status(); st.State != StateRevoked || !strings.Contains(st.LastError, "revoked") {
			t.Fatalf("status %+v", st)
		}
	})
}
