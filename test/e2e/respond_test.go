package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/wire"
)

// entityOf builds the entity id of a live pid from /proc, as the agent does.
func entityOf(t *testing.T, pid int) (string, uint64) {
	t.Helper()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d:%d", strings.TrimSpace(string(boot)), pid, start), start
}

// sameProcess reports whether pid still runs the process that started at start.
func sameProcess(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return f[0] != "Z" && f[19] == strconv.FormatUint(start, 10)
}

func childrenOf(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func (e *env) action(args ...string) (api.Action, error) {
	out, err := e.cli(append(args, "--json", "--wait", "30s")...)
	var a api.Action
	if jerr := json.Unmarshal([]byte(out), &a); jerr != nil && err == nil {
		err = fmt.Errorf("decode %q: %w", out, jerr)
	}
	return a, err
}

// TestKillTreeByIdentity kills a process tree through the CLI, the server's
// queue and the agent's long poll, and refuses stale identities.
func TestKillTreeByIdentity(t *testing.T) {
	e := newEnv(t)
	e.startServer()
	e.startAgent(true)
	st, err := e.agentStatus()
	if err != nil || st.HostID == "" {
		t.Fatalf("agent status: %+v %v", st, err)
	}
	host := st.HostID

	// A tree: sh -> (sleep, sh -> sleep).
	cmd := exec.Command("/bin/sh", "-c", "sleep 300 & /bin/sh -c 'sleep 300 & wait' & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	root := cmd.Process.Pid
	var all []int
	waitFor(t, 10*time.Second, "the tree to form", func() bool {
		all = []int{root}
		for i := 0; i < len(all); i++ {
			all = append(all, childrenOf(all[i])...)
		}
		return len(all) == 4
	})
	starts := map[int]uint64{}
	for _, p := range all {
		_, starts[p] = entityOf(t, p)
	}
	rootEntity, _ := entityOf(t, root)

	t.Run("StaleStartRefused", func(t *testing.T) {
		boot, pid, start := strings.Split(rootEntity, ":")[0], root, starts[root]
		stale := fmt.Sprintf("%s:%d:%d", boot, pid, start+1)
		a, err := e.action("kill", host, stale, "--tree", "--reason", "stale test")
		if err == nil || a.State != wire.ActionFailed || !strings.Contains(a.Error, "stale") {
			t.Fatalf("stale kill: %+v %v", a, err)
		}
		otherBoot := fmt.Sprintf("00000000-0000-0000-0000-000000000000:%d:%d", pid, start)
		a, err = e.action("kill", host, otherBoot, "--reason", "other boot")
		if err == nil || a.State != wire.ActionFailed || !strings.Contains(a.Error, "boot") {
			t.Fatalf("other-boot kill: %+v %v", a, err)
		}
		for _, p := range all {
			if !sameProcess(p, starts[p]) {
				t.Fatalf("pid %d died after a refused kill", p)
			}
		}
	})

	t.Run("Tree", func(t *testing.T) {
		t0 := time.Now()
		a, err := e.action("kill", host, rootEntity, "--tree", "--reason", "e2e: malware tree")
		if err != nil || a.State != wire.ActionDone {
			t.Fatalf("kill: %+v %v\n%s", a, err, tail(e.agent.log))
		}
		t.Logf("kill of a 4-process tree: CLI to outcome in %v", time.Since(t0))
		var res wire.KillResult
		if err := json.Unmarshal(a.Result, &res); err != nil {
			t.Fatalf("result %s: %v", a.Result, err)
		}
		if len(res.Killed) != 4 || res.Killed[len(res.Killed)-1] != rootEntity {
			t.Fatalf("killed %v, want 4 entities ending with the root %s", res.Killed, rootEntity)
		}
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			t.Fatal("root still running")
		}
		waitFor(t, 10*time.Second, "every process of the tree gone", func() bool {
			for _, p := range all {
				if sameProcess(p, starts[p]) {
					return false
				}
			}
			return true
		})
		// The same identity again: nothing to kill, reported as gone.
		a, err = e.action("kill", host, rootEntity, "--reason", "again")
		if err != nil || a.State != wire.ActionDone || !strings.Contains(string(a.Result), `"gone":["`+rootEntity) {
			t.Fatalf("kill of a dead entity: %+v %v", a, err)
		}
	})

	out, err := e.cli("actions", host)
	if err != nil || strings.Count(out, "  kill  ") != 4 || strings.Count(out, "  failed  ") != 2 {
		t.Fatalf("actions:\n%s %v", out, err)
	}
}
