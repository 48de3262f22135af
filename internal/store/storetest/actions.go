package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/store"
)

// testActions checks the action queue: enqueue, duplicate ids, delivery
// once, finishing, expiry and tenant scope.
func testActions(t *testing.T, s store.StateStore) {
	ctx := context.Background()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(tenant, id, host string, created time.Time, ttl time.Duration) store.Action {
		return store.Action{ID: id, Tenant: tenant, HostID: host, Type: "kill", Params: `{"entity_id":"b:1:2"}`,
			Reason: "why " + id, Actor: "alice", State: "queued", Created: created, ExpiresAt: created.Add(ttl)}
	}
	for _, a := range []store.Action{
		mk("a", "a1", "h1", now, time.Hour),
		mk("a", "a2", "h1", now.Add(time.Second), time.Hour),
		mk("a", "a3", "h2", now.Add(2*time.Second), time.Hour),
		mk("a", "old", "h1", now.Add(-2*time.Hour), time.Hour), // expired already
		mk("b", "a1", "h1", now, time.Hour),                    // same id, other tenant
	} {
		if err := s.EnqueueAction(ctx, a); err != nil {
			t.Fatalf("enqueue %s/%s: %v", a.Tenant, a.ID, err)
		}
	}
	if err := s.EnqueueAction(ctx, mk("a", "a1", "h2", now, time.Hour)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate id: %v", err)
	}
	if err := s.EnqueueAction(ctx, store.Action{Tenant: "a", HostID: "h1", Type: "kill"}); err == nil {
		t.Fatal("action without id accepted")
	}
	got, err := s.GetAction(ctx, "a", "a1")
	if err != nil || got.HostID != "h1" || got.Reason != "why a1" || got.Actor != "alice" || got.State != "queued" ||
		!got.Created.Equal(now) || !got.ExpiresAt.Equal(now.Add(time.Hour)) || got.Params != `{"entity_id":"b:1:2"}` {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := s.GetAction(ctx, "c", "a1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other tenant's action: %v", err)
	}

	// Expiry happens before delivery: "old" never reaches the agent.
	exp, err := s.ExpireActions(ctx, now)
	if err != nil || len(exp) != 1 || exp[0].ID != "old" || exp[0].State != "expired" {
		t.Fatalf("expire: %+v %v", exp, err)
	}
	if exp, _ := s.ExpireActions(ctx, now); len(exp) != 0 {
		t.Fatalf("expired twice: %+v", exp)
	}

	del, err := s.DeliverActions(ctx, "a", "h1", now.Add(time.Minute), false)
	if err != nil || len(del) != 2 || del[0].ID != "a1" || del[1].ID != "a2" || del[0].State != "delivered" {
		t.Fatalf("deliver: %+v %v", del, err)
	}
	if del, _ := s.DeliverActions(ctx, "a", "h1", now.Add(time.Minute), false); len(del) != 0 {
		t.Fatalf("delivered twice: %+v", del)
	}
	// A restarted agent gets its unfinished actions again, never another host's.
	if del, _ := s.DeliverActions(ctx, "a", "h1", now.Add(90*time.Second), true); len(del) != 2 || del[0].ID != "a1" || !del[0].Delivered.Equal(now.Add(90*time.Second)) {
		t.Fatalf("redelivery: %+v", del)
	}
	if del, _ := s.DeliverActions(ctx, "a", "h9", now, true); len(del) != 0 {
		t.Fatalf("redelivery to another host: %+v", del)
	}
	// Tenant b's a1 is still queued.
	if bg, _ := s.GetAction(ctx, "b", "a1"); bg.State != "queued" {
		t.Fatalf("other tenant's action touched: %+v", bg)
	}

	if _, err := s.FinishAction(ctx, "a", "h2", "a1", "done", "{}", "", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("finish by another host: %v", err)
	}
	if _, err := s.FinishAction(ctx, "a", "h2", "a3", "done", "{}", "", now); !errors.Is(err, store.ErrBadState) {
		t.Fatalf("finish an undelivered action: %v", err)
	}
	if _, err := s.FinishAction(ctx, "a", "h1", "a1", "queued", "", "", now); !errors.Is(err, store.ErrBadState) {
		t.Fatalf("finish into queued: %v", err)
	}
	fin, err := s.FinishAction(ctx, "a", "h1", "a1", "done", `{"killed":["x"]}`, "", now.Add(2*time.Minute))
	if err != nil || fin.State != "done" || fin.Result != `{"killed":["x"]}` {
		t.Fatalf("finish: %+v %v", fin, err)
	}
	if _, err := s.FinishAction(ctx, "a", "h1", "a1", "failed", "", "again", now); !errors.Is(err, store.ErrBadState) {
		t.Fatalf("finished twice: %v", err)
	}
	if _, err := s.FinishAction(ctx, "a", "h1", "a2", "failed", "", "no such process", now); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetAction(ctx, "a", "a1")
	if got.State != "done" || !got.Finished.Equal(now.Add(2*time.Minute)) || !got.Delivered.Equal(now.Add(90*time.Second)) {
		t.Fatalf("after finish: %+v", got)
	}

	list, err := s.ListActions(ctx, "a", "h1", 0)
	if err != nil || len(list) != 3 || list[0].ID != "a2" || list[2].ID != "old" {
		t.Fatalf("list h1: %+v %v", list, err)
	}
	if list, _ := s.ListActions(ctx, "a", "", 2); len(list) != 2 || list[0].ID != "a3" {
		t.Fatalf("list tenant limit 2: %+v", list)
	}
	if list, _ := s.ListActions(ctx, "zz", "", 0); len(list) != 0 {
		t.Fatalf("list unknown tenant: %+v", list)
	}
}
