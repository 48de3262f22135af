// Command exec measures the agent's overhead on an exec-heavy workload: the
// same shell loop of N executions of a copy of /bin/true, timed alternately
// without the agent and with it (server on loopback, embedded store), in one
// run. It prints the median times, their ratio and spread, and how many exec
// events reached the server out of how many were expected, and writes the
// figures to bench/results/<date>.json.
//
// The trap: absolute times on a shared 2-core machine mean little; only the
// ratio of runs interleaved in the same process is worth comparing.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		mamoriBin = flag.String("mamori", "bin/mamori", "path of the mamori binary")
		agentBin  = flag.String("agent", "bin/mamori-agent", "path of the mamori-agent binary")
		n         = flag.Int("n", 5000, "executions per round")
		rounds    = flag.Int("rounds", 10, "rounds of each configuration (interleaved A B, B A, …)")
		outDir    = flag.String("out", "bench/results", "directory for the JSON result")
	)
	flag.Parse()
	if err := run(*mamoriBin, *agentBin, *n, *rounds, *outDir); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	Date         string    `json:"date"`
	Workload     string    `json:"workload"`
	Execs        int       `json:"execs"`
	Rounds       int       `json:"rounds"`
	BareSeconds  []float64 `json:"bare_seconds"`
	AgentSeconds []float64 `json:"agent_seconds"`
	BareMedian   float64   `json:"bare_median"`
	AgentMedian  float64   `json:"agent_median"`
	Ratio        float64   `json:"ratio"` // median of paired ratios
	// RatioOfMedians is the agent runs' median over the bare runs' median.
	RatioOfMedians float64 `json:"ratio_of_medians"`
	RatioMin       float64 `json:"ratio_min"`
	RatioMax       float64 `json:"ratio_max"`
	EventsSeen     int     `json:"events_seen"`
	EventsWanted   int     `json:"events_expected"`
	SensorMode     string  `json:"sensor_mode"`
	// AgentCPUSeconds is the agent's CPU time (user+system) during the
	// agent rounds; AgentCPUPerExecUs divides it by the executions.
	AgentCPUSeconds   float64 `json:"agent_cpu_seconds"`
	AgentCPUPerExecUs float64 `json:"agent_cpu_per_exec_us"`
	AgentRSSMiB       float64 `json:"agent_rss_mib"`
	RingDropped       uint64  `json:"ring_dropped"`
}

func run(mamoriBin, agentBin string, n, rounds int, outDir string) error {
	for _, p := range []*string{&mamoriBin, &agentBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	tmp, err := os.MkdirTemp("", "mamori-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	srvDir, agDir := filepath.Join(tmp, "server"), filepath.Join(tmp, "agent")

	// The server stands in for one on another machine: it runs SCHED_IDLE,
	// so its ingest work takes only CPU time the workload leaves unused and
	// the ratio measures the agent, not a co-located server.
	srvArgs := []string{mamoriBin, "server", "--data", srvDir, "--listen", "127.0.0.1:0"}
	if chrt, err := exec.LookPath("chrt"); err == nil {
		srvArgs = append([]string{chrt, "--idle", "0"}, srvArgs...)
	}
	srv := exec.Command(srvArgs[0], srvArgs[1:]...)
	srvLog, _ := os.Create(filepath.Join(tmp, "server.log"))
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	defer stop(srv)
	api, err := waitServer(srvDir, 20*time.Second)
	if err != nil {
		return err
	}
	tok, err := exec.Command(mamoriBin, "token", "create", "--data", srvDir, "--ttl", "10m").Output()
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}

	agentLog, _ := os.Create(filepath.Join(tmp, "agent.log"))
	startAgent := func(args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(agentBin, append(args, "--data", agDir)...)
		cmd.Stdout, cmd.Stderr = agentLog, agentLog
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		if _, err := waitAgent(agentBin, agDir, 30*time.Second); err != nil {
			stop(cmd)
			return nil, fmt.Errorf("%w (agent log: %s)", err, filepath.Join(tmp, "agent.log"))
		}
		// Start-up work (the /proc snapshot, hashing every running
		// executable) is not the steady-state overhead measured here: wait
		// until the agent is idle.
		waitIdle(cmd.Process.Pid, 20*time.Second)
		return cmd, nil
	}
	ag, err := startAgent("--server", api.url, "--enroll-token", strings.TrimSpace(string(tok)))
	if err != nil {
		return err
	}
	stop(ag)

	res := result{Date: time.Now().UTC().Format(time.RFC3339), Workload: "sh loop of /bin/true copies", Execs: n, Rounds: rounds}
	var exes []string
	bareRound := func(r int) (time.Duration, error) { return workload(tmp, fmt.Sprintf("bare-%d", r), n) }
	agentRound := func(r int) (time.Duration, error) {
		ag, err := startAgent()
		if err != nil {
			return 0, err
		}
		defer stop(ag) // SIGTERM: the agent flushes and ships before exiting
		exes = append(exes, filepath.Join(tmp, fmt.Sprintf("true-agent-%d", r)))
		cpu0 := cpuTime(ag.Process.Pid)
		with, err := workload(tmp, fmt.Sprintf("agent-%d", r), n)
		res.AgentCPUSeconds += (cpuTime(ag.Process.Pid) - cpu0).Seconds()
		res.AgentRSSMiB = max(res.AgentRSSMiB, rssMiB(ag.Process.Pid))
		if st, serr := agentStatus(agentBin, agDir); serr == nil {
			res.SensorMode = st.SensorMode
			var d uint64
			for _, v := range st.RingDropped {
				d += v
			}
			res.RingDropped = d
		}
		return with, err
	}
	for r := 0; r < rounds; r++ {
		// A B, then B A: drift in the machine's speed cancels out.
		var bare, with time.Duration
		var err1, err2 error
		if r%2 == 0 {
			bare, err1 = bareRound(r)
			with, err2 = agentRound(r)
		} else {
			with, err2 = agentRound(r)
			bare, err1 = bareRound(r)
		}
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		res.BareSeconds = append(res.BareSeconds, bare.Seconds())
		res.AgentSeconds = append(res.AgentSeconds, with.Seconds())
		fmt.Fprintf(os.Stderr, "round %d: bare %.3fs agent %.3fs (%.3f)\n", r+1, bare.Seconds(), with.Seconds(), with.Seconds()/bare.Seconds())
	}

	// Every exec of the agent rounds must reach the server exactly once.
	ag, err = startAgent()
	if err != nil {
		return err
	}
	res.EventsWanted = n * rounds
	deadline := time.Now().Add(90 * time.Second)
	for {
		seen := 0
		for _, exe := range exes {
			c, err := api.countExecs(exe)
			if err != nil {
				return err
			}
			seen += c
		}
		res.EventsSeen = seen
		if seen >= res.EventsWanted || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	stop(ag)

	// The headline is the median of the paired ratios (each agent run over
	// the bare run beside it): drift in the machine's speed cancels within a
	// pair, and the median ignores the odd disturbed pair.
	res.BareMedian, res.AgentMedian = median(res.BareSeconds), median(res.AgentSeconds)
	var ratios []float64
	for i := range res.BareSeconds {
		ratios = append(ratios, res.AgentSeconds[i]/res.BareSeconds[i])
	}
	res.Ratio = median(ratios)
	res.RatioOfMedians = res.AgentMedian / res.BareMedian
	res.RatioMin, res.RatioMax = slices.Min(ratios), slices.Max(ratios)

	fmt.Printf("\n%-34s %10s %10s %8s %15s %10s %12s\n", "workload", "bare (s)", "agent (s)", "ratio", "ratio range", "of medians", "events")
	fmt.Printf("%-34s %10.3f %10.3f %8.3f %7.3f–%-7.3f %10.3f %5d/%-6d\n", fmt.Sprintf("%d execs of /bin/true ×%d", n, rounds),
		res.BareMedian, res.AgentMedian, res.Ratio, res.RatioMin, res.RatioMax, res.RatioOfMedians, res.EventsSeen, res.EventsWanted)
	res.AgentCPUPerExecUs = res.AgentCPUSeconds / float64(res.EventsWanted) * 1e6
	fmt.Printf("sensor mode %s, ring-buffer drops %d, agent CPU %.1f µs per exec (%.2f s in all), agent RSS %.1f MiB\n",
		res.SensorMode, res.RingDropped, res.AgentCPUPerExecUs, res.AgentCPUSeconds, res.AgentRSSMiB)

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	out := filepath.Join(outDir, time.Now().UTC().Format("2006-01-02T150405")+"-exec.json")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("wrote", out)
	if res.EventsSeen != res.EventsWanted {
		return fmt.Errorf("events seen %d, expected %d", res.EventsSeen, res.EventsWanted)
	}
	return nil
}

// workload runs n executions of a fresh copy of /bin/true from one shell.
func workload(dir, name string, n int) (time.Duration, error) {
	exe := filepath.Join(dir, "true-"+name)
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		return 0, err
	}
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do "$0"; i=$((i+1)); done`, n)
	t0 := time.Now()
	if out, err := exec.Command("/bin/sh", "-c", script, exe).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("workload: %w: %s", err, out)
	}
	return time.Since(t0), nil
}

func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

type agentStat struct {
	SensorMode  string            `json:"sensor_mode"`
	RingDropped map[string]uint64 `json:"ring_dropped"`
	Connection  struct {
		State string `json:"state"`
	} `json:"connection"`
}

func agentStatus(agentBin, dir string) (agentStat, error) {
	var st agentStat
	out, err := exec.Command(agentBin, "status", "--data", dir, "--json").Output()
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(out, &st)
	return st, err
}

// waitAgent waits until the agent's sensor runs and it has reached the server.
func waitAgent(agentBin, dir string, d time.Duration) (agentStat, error) {
	deadline := time.Now().Add(d)
	for {
		st, err := agentStatus(agentBin, dir)
		if err == nil && st.SensorMode != "" && st.SensorMode != "none" && st.Connection.State == "connected" {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("agent not ready after %s (status %+v, err %v)", d, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type apiConn struct {
	url   string
	token string
	hc    *http.Client
}

func waitServer(dir string, d time.Duration) (*apiConn, error) {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "server.json"))
		if err == nil {
			var info struct {
				URL            string `json:"url"`
				CAFile         string `json:"ca_file"`
				AdminTokenFile string `json:"admin_token_file"`
			}
			if err := json.Unmarshal(b, &info); err != nil {
				return nil, err
			}
			ca, err1 := os.ReadFile(filepath.Join(dir, info.CAFile))
			tok, err2 := os.ReadFile(filepath.Join(dir, info.AdminTokenFile))
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			c := &apiConn{url: info.URL, token: strings.TrimSpace(string(tok)),
				hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
			if _, err := c.get("/api/v1/hosts"); err == nil {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server not ready after %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *apiConn) get(path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return b, err
}

func (c *apiConn) countExecs(exe string) (int, error) {
	q := url.Values{"type": {"process_exec"}, "where": {"process.exe=" + exe}, "limit": {"100000"}}
	b, err := c.get("/api/v1/events?" + q.Encode())
	if err != nil {
		return 0, err
	}
	var r struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, err
	}
	return len(r.Events), nil
}

// waitIdle waits until a process uses under 5% of a core over 300 ms.
func waitIdle(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c0 := cpuTime(pid)
		time.Sleep(300 * time.Millisecond)
		if cpuTime(pid)-c0 < 15*time.Millisecond {
			return
		}
	}
}

// cpuTime reads a process's user+system CPU time from /proc.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command name, which may hold spaces and ')'.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// rssMiB reads a process's resident set size from /proc.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
