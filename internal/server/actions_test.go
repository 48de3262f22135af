package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/wire"
)

func (a *agent) poll(t *testing.T, wait int) wire.ActionPollResponse {
	t.Helper()
	st, body, err := postJSON(a.hc, a.env.url+wire.PathActionsPoll, wire.ActionPoll{BootID: "b", WaitSeconds: wait})
	if err != nil || st != http.StatusOK {
		t.Fatalf("poll: %d %s %v", st, body, err)
	}
	var out wire.ActionPollResponse
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("poll response %q: %v", body, err)
	}
	return out
}

func (a *agent) result(t *testing.T, r wire.ActionResult) (int, wire.Error) {
	t.Helper()
	st, body, err := postJSON(a.hc, a.env.url+wire.PathActionsResult, r)
	if err != nil {
		t.Fatal(err)
	}
	var we wire.Error
	if st != http.StatusOK {
		if err := json.Unmarshal(body, &we); err != nil || we.Error == "" {
			t.Fatalf("error %d is not a wire.Error: %q", st, body)
		}
	}
	return st, we
}

func statusCode(err error) int {
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func TestActions(t *testing.T) {
	env := startServer(t, nil)
	ctx := context.Background()
	ag := env.enroll(RootTenant)
	other := env.enroll("acme")
	mkKey := func(tenant, role string) *apiclient.Client {
		k, err := env.admin.CreateKey(ctx, api.KeyRequest{Tenant: tenant, Name: tenant + "-" + role, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		c, err := apiclient.New(env.url, k.Key, env.caPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	analyst := mkKey(RootTenant, RoleAnalyst)
	ro := mkKey(RootTenant, RoleReadonly)
	acme := mkKey("acme", RoleAdmin)
	kill := func(id, entity string) api.ActionRequest {
		return api.ActionRequest{ID: id, Type: wire.ActionKill, Params: json.RawMessage(`{"entity_id":"` + entity + `","tree":true}`), Reason: "ticket 42"}
	}

	t.Run("Refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			c    *apiclient.Client
			host string
			req  api.ActionRequest
			want int
		}{
			{"readonly", ro, ag.hostID, kill("", "b:100:5"), 403},
			{"unknown host", analyst, "nope", kill("", "b:100:5"), 404},
			{"other tenant's host", acme, ag.hostID, kill("", "b:100:5"), 404},
			{"kill without entity", analyst, ag.hostID, api.ActionRequest{Type: "kill", Reason: "r"}, 400},
			{"kill bad entity", analyst, ag.hostID, kill("", "b:notapid:5"), 400},
			{"kill pid 1", analyst, ag.hostID, kill("", "b:1:5"), 400},
			{"kill unknown param", analyst, ag.hostID, api.ActionRequest{Type: "kill", Params: json.RawMessage(`{"entity_id":"b:100:5","signal":9}`), Reason: "r"}, 400},
			{"isolate with params", analyst, ag.hostID, api.ActionRequest{Type: "isolate", Params: json.RawMessage(`{"x":1}`), Reason: "r"}, 400},
			{"unknown type", analyst, ag.hostID, api.ActionRequest{Type: "format-disk", Reason: "r"}, 400},
			{"no reason", analyst, ag.hostID, api.ActionRequest{Type: "isolate"}, 400},
			{"control chars in reason", analyst, ag.hostID, api.ActionRequest{Type: "isolate", Reason: "a\x00b"}, 400},
			{"bad id", analyst, ag.hostID, api.ActionRequest{ID: "../x", Type: "isolate", Reason: "r"}, 400},
			{"ttl too long", analyst, ag.hostID, api.ActionRequest{Type: "isolate", Reason: "r", TTLSeconds: 1 << 40}, 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := tc.c.CreateAction(ctx, tc.host, "", tc.req)
				if got := statusCode(err); got != tc.want {
					t.Fatalf("status %d (%v), want %d", got, err, tc.want)
				}
			})
		}
		// Everything refused past authentication is in the audit log.
		audit, err := env.admin.Audit(ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		refused := 0
		for _, e := range audit {
			if e.Action == "action.refused" {
				refused++
			}
		}
		if refused != 11 { // all but readonly (refused before auth) and the acme one (in acme's log)
			t.Fatalf("%d action.refused entries, want 11: %+v", refused, audit)
		}
		if list, _ := ag.env.admin.Actions(ctx, ag.hostID, "", 0); len(list) != 0 {
			t.Fatalf("refused actions were queued: %+v", list)
		}
	})

	t.Run("QueueDeliverFinish", func(t *testing.T) {
		a, err := analyst.CreateAction(ctx, ag.hostID, "", kill("k1", "b:100:5"))
		if err != nil || a.State != wire.ActionQueued || a.Actor != "default-analyst" || a.ID != "k1" {
			t.Fatalf("create: %+v %v", a, err)
		}
		if _, err := analyst.CreateAction(ctx, ag.hostID, "", kill("k1", "b:100:6")); statusCode(err) != 409 {
			t.Fatalf("duplicate id: %v", err)
		}
		// The other tenant's agent sees nothing.
		if got := other.poll(t, 0); len(got.Actions) != 0 {
			t.Fatalf("foreign agent got %+v", got)
		}
		got := ag.poll(t, 0)
		if len(got.Actions) != 1 || got.Actions[0].ID != "k1" || got.Actions[0].Type != "kill" || got.Actions[0].Reason != "ticket 42" {
			t.Fatalf("poll: %+v", got)
		}
		var p wire.KillParams
		if err := json.Unmarshal(got.Actions[0].Params, &p); err != nil || p.EntityID != "b:100:5" || !p.Tree {
			t.Fatalf("params: %s %v", got.Actions[0].Params, err)
		}
		if again := ag.poll(t, 0); len(again.Actions) != 0 {
			t.Fatalf("delivered twice: %+v", again)
		}
		if a, _ := ro.Action(ctx, "k1", ""); a.State != wire.ActionDelivered || a.Delivered == nil {
			t.Fatalf("after delivery: %+v", a)
		}
		for _, tc := range []struct {
			name string
			r    wire.ActionResult
			want int
		}{
			{"bad state", wire.ActionResult{ID: "k1", State: "queued"}, 400},
			{"not json", wire.ActionResult{ID: "k1", State: "done", Result: json.RawMessage(`{`)}, 400},
			{"unknown id", wire.ActionResult{ID: "zz", State: "done"}, 404},
		} {
			if st, we := ag.result(t, tc.r); st != tc.want {
				t.Fatalf("%s: %d %+v, want %d", tc.name, st, we, tc.want)
			}
		}
		if st, we := other.result(t, wire.ActionResult{ID: "k1", State: "done"}); st != 404 {
			t.Fatalf("another host finishing k1: %d %+v", st, we)
		}
		if st, we := ag.result(t, wire.ActionResult{ID: "k1", State: "done", Result: json.RawMessage(`{"killed":["b:100:5"]}`)}); st != 200 {
			t.Fatalf("result: %d %+v", st, we)
		}
		if st, _ := ag.result(t, wire.ActionResult{ID: "k1", State: "failed"}); st != 409 {
			t.Fatalf("second result: %d", st)
		}
		a, err = ro.Action(ctx, "k1", "")
		if err != nil || a.State != wire.ActionDone || !strings.Contains(string(a.Result), "b:100:5") || a.Finished == nil {
			t.Fatalf("after result: %+v %v", a, err)
		}
		if _, err := acme.Action(ctx, "k1", ""); statusCode(err) != 404 {
			t.Fatalf("other tenant reads k1: %v", err)
		}
		audit, _ := env.admin.Audit(ctx, "", 200)
		var seen []string
		for _, e := range audit {
			if strings.Contains(e.Detail, "id=k1 ") {
				seen = append(seen, e.Action+"/"+e.Actor)
			}
		}
		want := []string{"action.done/agent:" + ag.hostID, "action.delivered/agent:" + ag.hostID, "action.create/default-analyst"}
		if strings.Join(seen, ",") != strings.Join(want, ",") {
			t.Fatalf("audit of k1 (newest first): %v, want %v", seen, want)
		}
	})

	t.Run("LongPollWakes", func(t *testing.T) {
		type res struct {
			got wire.ActionPollResponse
			at  time.Time
		}
		done := make(chan res, 1)
		go func() {
			st, body, err := postJSON(ag.hc, env.url+wire.PathActionsPoll, wire.ActionPoll{WaitSeconds: 20})
			var out wire.ActionPollResponse
			if err == nil && st == 200 {
				_ = json.Unmarshal(body, &out)
			}
			done <- res{out, time.Now()}
		}()
		time.Sleep(300 * time.Millisecond)
		queued := time.Now()
		if _, err := analyst.CreateAction(ctx, ag.hostID, "", api.ActionRequest{ID: "iso1", Type: "isolate", Reason: "contain"}); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if len(r.got.Actions) != 1 || r.got.Actions[0].ID != "iso1" {
			t.Fatalf("long poll: %+v", r.got)
		}
		lat := r.at.Sub(queued)
		t.Logf("queue-to-delivery latency over a waiting long poll: %v", lat)
		if lat > 2*time.Second {
			t.Fatalf("long poll woke after %v", lat)
		}
	})

	t.Run("OfflineThenExpired", func(t *testing.T) {
		if _, err := analyst.CreateAction(ctx, ag.hostID, "", api.ActionRequest{ID: "exp1", Type: "release", Reason: "r", TTLSeconds: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := analyst.CreateAction(ctx, ag.hostID, "", api.ActionRequest{ID: "wait1", Type: "release", Reason: "r"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
		if a, _ := analyst.Action(ctx, "exp1", ""); a.State != wire.ActionExpired {
			t.Fatalf("exp1: %+v", a)
		}
		// The agent "reconnects": only the unexpired action arrives.
		got := ag.poll(t, 0)
		if len(got.Actions) != 1 || got.Actions[0].ID != "wait1" {
			t.Fatalf("poll after reconnect: %+v", got)
		}
		// It "restarts" before reporting: its first poll gets every
		// unfinished action again (iso1, wait1), never the finished k1.
		st, body, err := postJSON(ag.hc, env.url+wire.PathActionsPoll, wire.ActionPoll{First: true})
		var again wire.ActionPollResponse
		if err != nil || st != 200 || json.Unmarshal(body, &again) != nil || len(again.Actions) != 2 ||
			again.Actions[0].ID != "iso1" || again.Actions[1].ID != "wait1" {
			t.Fatalf("first poll after restart: %d %s %v", st, body, err)
		}
		list, err := ro.Actions(ctx, ag.hostID, "", 0)
		if err != nil || len(list) != 4 || list[0].ID != "wait1" {
			t.Fatalf("list: %+v %v", list, err)
		}
		audit, _ := env.admin.Audit(ctx, "", 50)
		found := false
		for _, e := range audit {
			found = found || (e.Action == "action.expired" && strings.Contains(e.Detail, "id=exp1"))
		}
		if !found {
			t.Fatal("expiry not audited")
		}
	})
}

// TestLongPollEndsOnShutdown: a waiting long poll must not hold the
// server's graceful drain for its full wait.
func TestLongPollEndsOnShutdown(t *testing.T) {
	dir := t.TempDir()
	srv, err := New(Options{DataDir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	env := &testEnv{t: t, srv: srv, dir: dir, url: srv.Info().URL, caPEM: srv.ca.CertPEM}
	env.admin, err = apiclient.FromDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := env.admin.OpenAPI(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
	}
	ag := env.enroll(RootTenant)
	polled := make(chan int, 1)
	go func() {
		st, _, _ := postJSON(ag.hc, env.url+wire.PathActionsPoll, wire.ActionPoll{WaitSeconds: 25})
		polled <- st
	}()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("shutdown took %v with a long poll open", d)
	}
	if st := <-polled; st != http.StatusOK {
		t.Fatalf("poll answered %d on shutdown", st)
	}
}
