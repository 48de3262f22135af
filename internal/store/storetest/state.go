package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/store"
)

// TestStateStore runs the state store suite. open must return a fresh store
// for a new dir and the same data when called again on a dir.
func TestStateStore(t *testing.T, openErr func(dir string) (store.StateStore, error)) {
	ctx := context.Background()
	open := func(t *testing.T, dir string) store.StateStore {
		t.Helper()
		s, err := openErr(dir)
		if err != nil {
			t.Fatalf("open %s: %v", dir, err)
		}
		return s
	}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	fresh := func(t *testing.T) store.StateStore {
		s := open(t, t.TempDir())
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("Tenants", func(t *testing.T) {
		s := fresh(t)
		for _, id := range []string{"b", "a"} {
			if err := s.PutTenant(ctx, store.Tenant{ID: id, Name: "T " + id, Created: now}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutTenant(ctx, store.Tenant{ID: "a", Name: "again"}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("duplicate tenant: %v", err)
		}
		got, err := s.GetTenant(ctx, "a")
		if err != nil || got.Name != "T a" || !got.Created.Equal(now) {
			t.Fatalf("get: %+v %v", got, err)
		}
		if _, err := s.GetTenant(ctx, "zz"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown tenant: %v", err)
		}
		list, err := s.ListTenants(ctx)
		if err != nil || len(list) != 2 || list[0].ID != "a" || list[1].ID != "b" {
			t.Fatalf("list: %+v %v", list, err)
		}
	})

	t.Run("EnrollTokens", func(t *testing.T) {
		s := fresh(t)
		tok := store.EnrollToken{Hash: "h-once", Tenant: "a", Created: now, ExpiresAt: now.Add(time.Hour), UsesLeft: 1, Note: "n"}
		if err := s.CreateEnrollToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateEnrollToken(ctx, tok); !errors.Is(err, store.ErrExists) {
			t.Fatalf("duplicate token: %v", err)
		}
		if err := s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h-exp", Tenant: "b", ExpiresAt: now, UsesLeft: 5}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h-two", Tenant: "b", ExpiresAt: now.Add(time.Hour), UsesLeft: 2}); err != nil {
			t.Fatal(err)
		}
		got, err := s.ConsumeEnrollToken(ctx, "h-once", now)
		if err != nil || got.Tenant != "a" || got.Note != "n" || !got.ExpiresAt.Equal(tok.ExpiresAt) {
			t.Fatalf("consume: %+v %v", got, err)
		}
		for _, tc := range []struct {
			hash string
			at   time.Time
			want error
		}{
			{"h-once", now, store.ErrTokenUsed},
			{"h-exp", now, store.ErrTokenExpired}, // expiry is exclusive
			{"h-exp", now.Add(time.Second), store.ErrTokenExpired},
			{"nope", now, store.ErrTokenInvalid},
			{"", now, store.ErrTokenInvalid},
			{"' OR '1'='1", now, store.ErrTokenInvalid},
		} {
			if _, err := s.ConsumeEnrollToken(ctx, tc.hash, tc.at); !errors.Is(err, tc.want) {
				t.Errorf("consume %q at %s: %v, want %v", tc.hash, tc.at, err, tc.want)
			}
		}
		// Concurrent consumers of a two-use token: exactly two win.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, used := 0, 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.ConsumeEnrollToken(ctx, "h-two", now)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, store.ErrTokenUsed):
					used++
				default:
					t.Errorf("concurrent consume: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 2 || used != 6 {
			t.Fatalf("concurrent consume: %d wins, %d used; want 2 and 6", wins, used)
		}
	})

	t.Run("Hosts", func(t *testing.T) {
		s := fresh(t)
		h := store.Host{ID: "host-1", Tenant: "a", Hostname: "web1", OS: "debian", Kernel: "6.18", AgentVersion: "0.1",
			CertSerial: "01", Enrolled: now, LastSeen: now}
		if err := s.PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := s.PutHost(ctx, store.Host{ID: "host-2", Tenant: "a", Hostname: "web2", Enrolled: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutHost(ctx, store.Host{ID: "host-b", Tenant: "b", Hostname: "other", Enrolled: now}); err != nil {
			t.Fatal(err)
		}
		// Replace within the tenant.
		h.Hostname = "web1-renamed"
		if err := s.PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetHost(ctx, "a", "host-1")
		if err != nil || got.Hostname != "web1-renamed" || got.Kernel != "6.18" || !got.Enrolled.Equal(now) || got.Revoked {
			t.Fatalf("get: %+v %v", got, err)
		}
		// Another tenant cannot take over or read the id.
		if err := s.PutHost(ctx, store.Host{ID: "host-1", Tenant: "b", Hostname: "evil"}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("cross-tenant put: %v", err)
		}
		if _, err := s.GetHost(ctx, "b", "host-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("cross-tenant get: %v", err)
		}
		if got, err := s.GetHost(ctx, "a", "host-1"); err != nil || got.Hostname != "web1-renamed" {
			t.Fatalf("after cross-tenant put: %+v %v", got, err)
		}
		f, err := s.FindHost(ctx, "host-b")
		if err != nil || f.Tenant != "b" {
			t.Fatalf("find: %+v %v", f, err)
		}
		if _, err := s.FindHost(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("find unknown: %v", err)
		}
		list, err := s.ListHosts(ctx, "a")
		if err != nil || len(list) != 2 || list[0].ID != "host-1" || list[1].ID != "host-2" {
			t.Fatalf("list a: %+v %v", list, err)
		}
		if list, _ := s.ListHosts(ctx, "nobody"); len(list) != 0 {
			t.Fatalf("list of unknown tenant: %+v", list)
		}
		later := now.Add(time.Minute)
		if err := s.TouchHost(ctx, "a", "host-1", later, `{"mode":"tp_btf"}`); err != nil {
			t.Fatal(err)
		}
		if err := s.TouchHost(ctx, "b", "host-1", later, "x"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("cross-tenant touch: %v", err)
		}
		if err := s.RevokeHost(ctx, "b", "host-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("cross-tenant revoke: %v", err)
		}
		if err := s.RevokeHost(ctx, "a", "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		got, _ = s.GetHost(ctx, "a", "host-1")
		if !got.LastSeen.Equal(later) || got.Status != `{"mode":"tp_btf"}` || got.Revoked {
			t.Fatalf("after touch: %+v", got)
		}
		if err := s.RevokeHost(ctx, "a", "host-1"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.FindHost(ctx, "host-1"); !got.Revoked {
			t.Fatalf("revoke did not stick: %+v", got)
		}
	})

	t.Run("APIKeys", func(t *testing.T) {
		s := fresh(t)
		k := store.APIKey{Hash: "k1", Tenant: "a", Name: "admin", Role: "admin", Created: now}
		if err := s.PutAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		if err := s.PutAPIKey(ctx, store.APIKey{Hash: "k1", Tenant: "b", Role: "admin"}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("duplicate key: %v", err)
		}
		got, err := s.GetAPIKey(ctx, "k1")
		if err != nil || got != k {
			t.Fatalf("get: %+v %v", got, err)
		}
		if _, err := s.GetAPIKey(ctx, "k2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	})

	t.Run("Gaps", func(t *testing.T) {
		s := fresh(t)
		for _, g := range []store.Gap{
			{Tenant: "a", HostID: "h1", FirstSeq: 50, LastSeq: 60, Reported: now, Reason: "spool overflow"},
			{Tenant: "a", HostID: "h1", FirstSeq: 10, LastSeq: 10, Reported: now, Reason: "seq jump"},
			{Tenant: "a", HostID: "h2", FirstSeq: 1, LastSeq: 2, Reported: now},
			{Tenant: "b", HostID: "h1", FirstSeq: 1, LastSeq: 99, Reported: now},
		} {
			if err := s.AddGap(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AddGap(ctx, store.Gap{Tenant: "a", HostID: "h1", FirstSeq: 9, LastSeq: 3}); err == nil {
			t.Fatal("inverted gap accepted")
		}
		got, err := s.ListGaps(ctx, "a", "h1")
		if err != nil || len(got) != 2 || got[0].FirstSeq != 10 || got[1].LastSeq != 60 || got[1].Reason != "spool overflow" || !got[1].Reported.Equal(now) {
			t.Fatalf("gaps a/h1: %+v %v", got, err)
		}
		if got, _ := s.ListGaps(ctx, "a", ""); len(got) != 3 {
			t.Fatalf("gaps of every host of a: %+v", got)
		}
		if got, _ := s.ListGaps(ctx, "c", "h1"); len(got) != 0 {
			t.Fatalf("gaps of unknown tenant: %+v", got)
		}
	})

	t.Run("Audit", func(t *testing.T) {
		s := fresh(t)
		for i := 0; i < 10; i++ {
			for _, tenant := range []string{"a", "b"} {
				e := store.AuditEntry{Time: now.Add(time.Duration(i) * time.Second), Tenant: tenant, Actor: "admin",
					Action: "token.create", Target: fmt.Sprintf("%s-%d", tenant, i), Detail: "{}"}
				if err := s.AppendAudit(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
		}
		all, err := s.ListAudit(ctx, "a", 0)
		if err != nil || len(all) != 10 {
			t.Fatalf("list all: %d %v", len(all), err)
		}
		for i, e := range all {
			if e.Target != fmt.Sprintf("a-%d", i) || e.Tenant != "a" || !e.Time.Equal(now.Add(time.Duration(i)*time.Second)) {
				t.Fatalf("entry %d: %+v", i, e)
			}
		}
		last, err := s.ListAudit(ctx, "a", 3)
		if err != nil || len(last) != 3 || last[0].Target != "a-7" || last[2].Target != "a-9" {
			t.Fatalf("last 3: %+v %v", last, err)
		}
		if got, _ := s.ListAudit(ctx, "c", 0); len(got) != 0 {
			t.Fatalf("audit of unknown tenant: %+v", got)
		}
	})

	t.Run("Persistence", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if err := s.PutTenant(ctx, store.Tenant{ID: "a", Name: "A", Created: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateEnrollToken(ctx, store.EnrollToken{Hash: "t", Tenant: "a", ExpiresAt: now.Add(time.Hour), UsesLeft: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConsumeEnrollToken(ctx, "t", now); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendAudit(ctx, store.AuditEntry{Time: now, Tenant: "a", Action: "x"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir)
		defer s.Close()
		if _, err := s.GetTenant(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConsumeEnrollToken(ctx, "t", now); !errors.Is(err, store.ErrTokenUsed) {
			t.Fatalf("token reusable after reopen: %v", err)
		}
		if got, _ := s.ListAudit(ctx, "a", 0); len(got) != 1 {
			t.Fatalf("audit after reopen: %+v", got)
		}
	})

	t.Run("Actions", func(t *testing.T) { testActions(t, fresh(t)) })
}
