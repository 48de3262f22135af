package respond

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/mamori-edr/mamori/internal/wire"
)

// TestExecuteHostileActions: whatever the server sends, Execute fails the
// action with a reason instead of panicking or acting on it.
func TestExecuteHostileActions(t *testing.T) {
	r := &Runner{Killer: &Killer{BootID: bootID(t)}} // no isolator
	for _, tc := range []struct {
		name string
		a    wire.Action
		want string
	}{
		{"unknown type", wire.Action{ID: "1", Type: "shell"}, "unknown action type"},
		{"kill params not JSON", wire.Action{ID: "2", Type: "kill", Params: json.RawMessage(`{`)}, "kill params"},
		{"kill params wrong shape", wire.Action{ID: "3", Type: "kill", Params: json.RawMessage(`[1]`)}, "kill params"},
		{"kill empty entity", wire.Action{ID: "4", Type: "kill", Params: json.RawMessage(`{}`)}, "entity id"},
		{"kill init", wire.Action{ID: "5", Type: "kill", Params: json.RawMessage(`{"entity_id":"` + bootID(t) + `:1:1"}`)}, "refused"},
		{"isolate without isolator", wire.Action{ID: "6", Type: "isolate"}, "not available"},
		{"release without isolator", wire.Action{ID: "7", Type: "release"}, "not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := r.Execute(context.Background(), tc.a)
			if res.ID != tc.a.ID || res.State != wire.ActionFailed || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("got %+v, want failed with %q", res, tc.want)
			}
		})
	}
}

func TestExecuteKill(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	k := &Killer{BootID: bootID(t)}
	st, err := k.readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	entity := k.entityID(cmd.Process.Pid, st.start)
	p, _ := json.Marshal(wire.KillParams{EntityID: entity})
	res := (&Runner{Killer: k}).Execute(context.Background(), wire.Action{ID: "k", Type: "kill", Params: p})
	var kr wire.KillResult
	if res.State != wire.ActionDone || json.Unmarshal(res.Result, &kr) != nil || len(kr.Killed) != 1 || kr.Killed[0] != entity {
		t.Fatalf("got %+v", res)
	}
}

// TestIsolatorStateFile: a corrupt state file is an error on restore (the
// host is not silently released) and shows in the status.
func TestIsolatorStateFile(t *testing.T) {
	dir := t.TempDir()
	iso := &Isolator{DataDir: dir, NFT: []string{"/nonexistent/nft"}}
	if err := iso.Restore(context.Background()); err != nil {
		t.Fatalf("restore with no state and no nft: %v", err)
	}
	if st := iso.Status(); st.Isolated || st.Error != "" {
		t.Fatalf("fresh status: %+v", st)
	}
	if err := iso.save(isolationState{Isolated: true}); err != nil {
		t.Fatal(err)
	}
	if err := iso.Restore(context.Background()); err == nil {
		t.Fatal("restore of an isolated host without nft succeeded")
	}
	if st := iso.Status(); !st.Isolated || st.Error == "" || len(st.Layers) != 0 {
		t.Fatalf("status after a failed re-apply must say isolated, no active layer, and why: %+v", st)
	}
	if err := writeRaw(dir, "{not json"); err != nil {
		t.Fatal(err)
	}
	if err := iso.Restore(context.Background()); err == nil || !strings.Contains(err.Error(), IsolationFile) {
		t.Fatalf("corrupt state: %v", err)
	}
	// Isolate without a resolvable endpoint refuses rather than strand the host.
	iso.Endpoints = func() []string { return []string{"https://name.invalid:8443"} }
	if _, err := iso.Isolate(context.Background()); err == nil || !strings.Contains(err.Error(), "no server address") {
		t.Fatalf("isolate with no reachable server: %v", err)
	}
}
