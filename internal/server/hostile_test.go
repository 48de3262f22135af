package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/sqlite"
	"github.com/mamori-edr/mamori/internal/wire"
)

func TestHostileBatches(t *testing.T) {
	env := startServer(t, nil)
	a := env.enroll("")
	if st, _, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(1, 5)}); st != 200 {
		t.Fatal(st, we)
	}
	good, _ := json.Marshal(wire.Batch{BootID: testBoot, Records: nExecs(6, 2)})
	gzGood := gz(good)

	// A gzip stream that inflates to MaxBatchDecompressed+1 MiB of spaces.
	var bomb bytes.Buffer
	{
		zw := newGzipWriterBest(&bomb)
		zw.Write([]byte(`{"records":[`))
		chunk := bytes.Repeat([]byte(" "), 1<<20)
		for i := 0; i < wire.MaxBatchDecompressed>>20+1; i++ {
			zw.Write(chunk)
		}
		zw.Close()
	}
	badRecord := func(mut func(*schema.Event)) []byte {
		ev := execEvent(500, 1, "/bin/x")
		mut(&ev)
		recs := append(nExecs(6, 1), records(7, ev)...)
		b, _ := json.Marshal(wire.Batch{BootID: testBoot, Records: recs})
		return gz(b)
	}
	tooMany := make([]wire.Record, wire.MaxBatchRecords+1)
	for i := range tooMany {
		tooMany[i] = wire.Record{Seq: uint64(i + 6), Event: json.RawMessage(`{}`)}
	}
	tooManyBody, _ := json.Marshal(wire.Batch{Records: tooMany})
	outOfOrder, _ := json.Marshal(wire.Batch{Records: append(nExecs(8, 1), nExecs(7, 1)...)})
	dupSeq, _ := json.Marshal(wire.Batch{Records: append(nExecs(7, 1), nExecs(7, 1)...)})

	tests := []struct {
		name    string
		body    []byte
		gzipped bool
		status  int
		code    string
		seq     uint64
		want    string
	}{
		{"malformed json", gz([]byte(`{"records":[{"seq":1,`)), true, 400, wire.CodeBadBatch, 0, "truncated"},
		{"not json", gz([]byte("hello")), true, 400, wire.CodeBadBatch, 0, "batch"},
		{"truncated gzip", gzGood[:len(gzGood)/2], true, 400, wire.CodeBadBatch, 0, "truncated"},
		{"gzip header garbage", []byte("not gzip at all"), true, 400, wire.CodeBadBatch, 0, "gzip"},
		{"trailing data", gz(append(append([]byte{}, good...), []byte(`{"x":1}`)...)), true, 400, wire.CodeBadBatch, 0, "trailing"},
		{"zip bomb", bomb.Bytes(), true, 413, wire.CodeTooLarge, 0, "decompression"},
		{"oversized body", bytes.Repeat([]byte("a"), wire.MaxBatchCompressed+1), false, 413, wire.CodeTooLarge, 0, "compressed"},
		{"oversized gzip body", append(gz([]byte(`{"records":[`)), bytes.Repeat([]byte{0}, wire.MaxBatchCompressed)...), true, 413, wire.CodeTooLarge, 0, "compressed"},
		{"too many records", gz(tooManyBody), true, 413, wire.CodeTooLarge, 0, "records"},
		{"out of order", gz(outOfOrder), true, 400, wire.CodeBadBatch, 0, "increasing"},
		{"repeated seq", gz(dupSeq), true, 400, wire.CodeBadBatch, 0, "increasing"},
		{"unknown type", badRecord(func(e *schema.Event) { e.Type = "rootkit" }), true, 400, wire.CodeBadRecord, 7, "seq 7"},
		{"wrong schema", badRecord(func(e *schema.Event) { e.Schema = 99 }), true, 400, wire.CodeBadRecord, 7, "schema version"},
		{"no time", badRecord(func(e *schema.Event) { e.Time = time.Time{} }), true, 400, wire.CodeBadRecord, 7, "time"},
		{"time out of range", badRecord(func(e *schema.Event) { e.Time = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) }), true, 400, wire.CodeBadRecord, 7, "out of range"},
		{"no process", badRecord(func(e *schema.Event) { e.Process = nil }), true, 400, wire.CodeBadRecord, 7, "entity_id"},
		{"seq zero", gz([]byte(`{"records":[{"seq":0,"event":{}}]}`)), true, 400, wire.CodeBadRecord, 0, "seq 0"},
		{"event not an object", gz([]byte(`{"records":[{"seq":9,"event":"x"}]}`)), true, 400, wire.CodeBadRecord, 9, "seq 9"},
		{"unknown encoding", good, false, 0, "", 0, ""}, // identity is accepted: checked below
	}
	for _, tc := range tests[:len(tests)-1] {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			st, _, we := a.send(tc.body, tc.gzipped)
			if st != tc.status || we.Code != tc.code || we.Seq != tc.seq || !strings.Contains(we.Error, tc.want) {
				t.Fatalf("got %d %+v; want %d code %s seq %d containing %q", st, we, tc.status, tc.code, tc.seq, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second && !raceEnabled {
				t.Fatalf("took %v", d)
			}
			if n := env.count(RootTenant); n != 5 {
				t.Fatalf("stored events changed to %d after a rejected batch", n)
			}
		})
	}
	// Still serving, nothing lost, and the next good batch goes in.
	st, br, we := a.send(good, false)
	if st != 200 || br.AckedSeq != 7 || br.Stored != 2 {
		t.Fatalf("good batch after hostile ones: %d %+v %+v", st, br, we)
	}
	evs, err := env.admin.Events(context.Background(), apiclient.EventFilter{})
	if err != nil || len(evs) != 7 {
		t.Fatalf("events after hostile batches: %d %v", len(evs), err)
	}
}

// failingEvents wraps the real sqlite store and fails Append while failing is set.
type failingEvents struct {
	store.EventStore
	failing atomic.Bool
}

func (f *failingEvents) Append(ctx context.Context, tenant string, evs []schema.Event) error {
	if f.failing.Load() {
		return fmt.Errorf("append: commit: %w", syscall.ENOSPC)
	}
	return f.EventStore.Append(ctx, tenant, evs)
}

func TestStoreFullIs503(t *testing.T) {
	var fe *failingEvents
	env := startServer(t, func(o *Options) {
		o.OpenEvents = func(dir string) (store.EventStore, error) {
			es, err := sqlite.OpenEvents(dir)
			if err != nil {
				return nil, err
			}
			fe = &failingEvents{EventStore: es}
			return fe, nil
		}
	})
	a := env.enroll("")
	if st, _, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(1, 3)}); st != 200 {
		t.Fatal(st, we)
	}
	fe.failing.Store(true)
	st, br, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(4, 3)})
	if st != http.StatusServiceUnavailable || we.Code != wire.CodeStoreUnavailable || !strings.Contains(we.Error, "no space left") || br.AckedSeq != 0 {
		t.Fatalf("disk full: %d %+v %+v", st, br, we)
	}
	fe.failing.Store(false)
	st, br, we = a.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(4, 3)})
	if st != 200 || br.AckedSeq != 6 || br.Stored != 3 || br.Duplicates != 0 {
		t.Fatalf("retry after disk full: %d %+v %+v", st, br, we)
	}
	if n := env.count(RootTenant); n != 6 {
		t.Fatalf("stored %d, want 6", n)
	}
}

// Concurrent retries of the same batch store each record once.
func TestConcurrentRetries(t *testing.T) {
	env := startServer(t, nil)
	a := env.enroll("")
	b := wire.Batch{BootID: testBoot, Records: nExecs(1, 200)}
	var wg sync.WaitGroup
	var stored atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, _ := json.Marshal(b)
			req, _ := http.NewRequest("POST", env.url+wire.PathEvents, bytes.NewReader(gz(j)))
			req.Header.Set("Content-Encoding", "gzip")
			resp, err := a.hc.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var br wire.BatchResponse
			json.NewDecoder(resp.Body).Decode(&br)
			if resp.StatusCode != 200 || br.AckedSeq != 200 || br.Stored+br.Duplicates != 200 {
				t.Errorf("status %d %+v", resp.StatusCode, br)
			}
			stored.Add(int64(br.Stored))
		}()
	}
	wg.Wait()
	if stored.Load() != 200 || env.count(RootTenant) != 200 {
		t.Fatalf("stored %d (count %d), want 200 once", stored.Load(), env.count(RootTenant))
	}
}

func TestAPIAuthAndTenants(t *testing.T) {
	env := startServer(t, nil)
	ctx := context.Background()
	mk := func(tenant, role string) *apiclient.Client {
		k, err := env.admin.CreateKey(ctx, api.KeyRequest{Tenant: tenant, Name: tenant + "-" + role, Role: role})
		if err != nil {
			t.Fatalf("create key: %v", err)
		}
		c, err := apiclient.New(env.url, k.Key, env.caPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	acmeAdmin, acmeRO, globexAnalyst := mk("acme", RoleAdmin), mk("acme", RoleReadonly), mk("globex", RoleAnalyst)

	// Hosts and events in two tenants.
	acmeTok, err := acmeAdmin.CreateToken(ctx, api.TokenRequest{TTLSeconds: 60})
	if err != nil || acmeTok.Tenant != "acme" {
		t.Fatalf("acme token: %+v %v", acmeTok, err)
	}
	_, _, acmeAgent := env.tryEnroll(acmeTok.Token, "acme-1")
	globexAgent := env.enroll("globex")
	acmeAgent.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(1, 2)})
	globexAgent.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(1, 3)})

	noKey, _ := apiclient.New(env.url, "x", env.caPEM)
	raw := env.plainClient()
	resp, err := raw.Get(env.url + api.Prefix + "/hosts")
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("no key: %v %v", resp, err)
	}
	resp.Body.Close()
	cases := []struct {
		name   string
		call   func() error
		status int
	}{
		{"wrong key", func() error { _, err := noKey.Hosts(ctx, ""); return err }, 401},
		{"readonly cannot create tokens", func() error { _, err := acmeRO.CreateToken(ctx, api.TokenRequest{TTLSeconds: 60}); return err }, 403},
		{"readonly cannot revoke", func() error { _, err := acmeRO.RevokeHost(ctx, acmeAgent.hostID, ""); return err }, 403},
		{"readonly cannot read audit", func() error { _, err := acmeRO.Audit(ctx, "", 10); return err }, 403},
		{"tenant admin cannot name another tenant", func() error { _, err := acmeAdmin.Hosts(ctx, "globex"); return err }, 403},
		{"tenant admin cannot mint for another tenant", func() error {
			_, err := acmeAdmin.CreateToken(ctx, api.TokenRequest{Tenant: "globex", TTLSeconds: 60})
			return err
		}, 403},
		{"cross-tenant host", func() error { _, err := globexAnalyst.Host(ctx, acmeAgent.hostID, ""); return err }, 404},
		{"cross-tenant revoke", func() error { _, err := acmeAdmin.RevokeHost(ctx, globexAgent.hostID, ""); return err }, 404},
		{"bad where", func() error {
			_, err := acmeRO.Events(ctx, apiclient.EventFilter{Where: []string{"body~x"}})
			return err
		}, 400},
		{"bad type", func() error { _, err := acmeRO.Events(ctx, apiclient.EventFilter{Types: []string{"nope"}}); return err }, 400},
		{"bad ttl", func() error { _, err := env.admin.CreateToken(ctx, api.TokenRequest{TTLSeconds: -5}); return err }, 400},
		{"bad tenant name", func() error { _, err := env.admin.CreateToken(ctx, api.TokenRequest{Tenant: "Bad Name!"}); return err }, 400},
		{"bad role", func() error { _, err := env.admin.CreateKey(ctx, api.KeyRequest{Name: "x", Role: "god"}); return err }, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !isStatus(err, tc.status) {
				t.Fatalf("got %v, want status %d", err, tc.status)
			}
		})
	}
	// Each tenant sees only its own.
	for _, c := range []struct {
		cl     *apiclient.Client
		tenant string
		host   string
		n      int
	}{{acmeRO, "", acmeAgent.hostID, 2}, {globexAnalyst, "", globexAgent.hostID, 3}, {env.admin, "acme", acmeAgent.hostID, 2}, {env.admin, "", "", 0}} {
		hosts, err := c.cl.Hosts(ctx, c.tenant)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := c.cl.Events(ctx, apiclient.EventFilter{Tenant: c.tenant})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != c.n || (c.host != "" && (len(hosts) != 1 || hosts[0].ID != c.host)) || (c.host == "" && len(hosts) != 0) {
			t.Fatalf("tenant view %q: hosts %+v, %d events; want host %q and %d events", c.tenant, hosts, len(evs), c.host, c.n)
		}
		for _, ev := range evs {
			if c.host != "" && ev.HostID != c.host {
				t.Fatalf("foreign event %+v", ev)
			}
		}
	}
	// Strict request bodies.
	for _, body := range []string{`{"ttl_seconds":60,"admin":true}`, `{"ttl_seconds":"x"}`, `{} {}`, `[`, strings.Repeat(" ", 2<<20)} {
		req, _ := http.NewRequest("POST", env.url+api.Prefix+"/tokens", strings.NewReader(body))
		key, _ := readAdminKey(env)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 413 {
			t.Errorf("body %.20q: status %d", body, resp.StatusCode)
		}
	}
	// Unknown query parameters are errors, not ignored filters.
	req, _ := http.NewRequest("GET", env.url+api.Prefix+"/events?hostid=x", nil)
	key, _ := readAdminKey(env)
	req.Header.Set("Authorization", "Bearer "+key)
	if resp, err := raw.Do(req); err != nil || resp.StatusCode != 400 {
		t.Fatalf("unknown parameter: %v %v", resp, err)
	}
	// Revocations and key creations are audited in the tenant's log.
	if _, err := acmeAdmin.RevokeHost(ctx, acmeAgent.hostID, ""); err != nil {
		t.Fatal(err)
	}
	audit, err := acmeAdmin.Audit(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) == 0 || audit[0].Action != "host.revoke" || audit[0].Actor != "acme-admin" {
		t.Fatalf("audit (newest first): %+v", audit)
	}
	for _, e := range audit {
		if e.Tenant != "acme" {
			t.Fatalf("foreign audit entry %+v", e)
		}
	}
}

func readAdminKey(env *testEnv) (string, error) {
	c, err := apiclient.FromDataDir(env.dir)
	if err != nil {
		return "", err
	}
	_ = c
	b, err := readFileTrim(env.dir + "/" + AdminTokenFile)
	return b, err
}

func TestOpenAPICoversRoutes(t *testing.T) {
	env := startServer(t, nil)
	raw, err := env.admin.OpenAPI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi doc: %v %q", err, doc.OpenAPI)
	}
	documented := map[string]bool{}
	for _, rt := range env.srv.routeTable() {
		ops, ok := doc.Paths[rt.path]
		if !ok {
			t.Errorf("route %s %s missing from openapi.json", rt.method, rt.path)
			continue
		}
		if _, ok := ops[strings.ToLower(rt.method)]; !ok {
			t.Errorf("route %s %s: method missing from openapi.json", rt.method, rt.path)
		}
		documented[strings.ToLower(rt.method)+" "+rt.path] = true
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if !documented[m+" "+p] {
				t.Errorf("openapi.json documents %s %s, which no route serves", m, p)
			}
		}
	}
}
