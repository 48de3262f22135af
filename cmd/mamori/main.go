// Command mamori is the Mamori server (`mamori server`) and the analyst's CLI
// (`mamori token create`, `hosts`, `events`, `tree`), a thin client of the
// REST API. This file is wiring only.
//
// The trap: client verbs need the server's URL, its CA and a credential; on
// the server's machine `--data DIR` (or MAMORI_DATA) supplies all three, and
// elsewhere `--server URL --credential FILE --ca FILE` must.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/query"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/version"
	"github.com/mamori-edr/mamori/internal/wire"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: mamori <command> [flags]

commands:
  server        run the server (--data DIR --listen ADDR)
  token create  create a one-time agent enrollment token
  hosts         list enrolled hosts
  events        search events
  tree ID       show a process with its ancestors, descendants and events
  isolate HOST  cut a host off the network except the management channel
  release HOST  undo isolate
  kill HOST ENTITY_ID [--tree]
                kill a process (and its descendants) by identity
  actions [HOST]
                list response actions and their outcomes
  rules check DIR
                load every Sigma rule under DIR; report which Mamori can evaluate and why not
  version       print the version

Client commands take --data DIR (or MAMORI_DATA) on the server's machine,
or --server URL --credential FILE [--ca FILE] elsewhere.
Run 'mamori <command> -h' for a command's flags.
`

// usageError makes run exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "mamori: %s\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "mamori: %v\n", err)
		return 1
	}
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command"}
	}
	ctx := context.Background()
	switch args[0] {
	case "server":
		return cmdServer(args[1:], stdout, stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			return usageError{"want: mamori token create [flags]"}
		}
		return cmdTokenCreate(ctx, args[2:], stdout, stderr)
	case "hosts":
		return cmdHosts(ctx, args[1:], stdout, stderr)
	case "events":
		return cmdEvents(ctx, args[1:], stdout, stderr)
	case "tree":
		return cmdTree(ctx, args[1:], stdout, stderr)
	case "isolate", "release", "kill":
		return cmdAction(ctx, args[0], args[1:], stdout, stderr)
	case "actions":
		return cmdActions(ctx, args[1:], stdout, stderr)
	case "rules":
		if len(args) < 2 || args[1] != "check" {
			return usageError{"want: mamori rules check DIR [--json]"}
		}
		return cmdRulesCheck(args[2:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "mamori %s\n", version.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mamori "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags, letting positional arguments sit anywhere.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdServer(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("server", stderr)
	data := fs.String("data", os.Getenv("MAMORI_DATA"), "data directory (CA, keys, stores)")
	listen := fs.String("listen", "127.0.0.1:8443", "address to listen on")
	var hostnames stringList
	fs.Var(&hostnames, "hostname", "extra DNS name or IP for the server certificate (repeatable)")
	engine := fs.String("event-engine", server.DefaultEventEngine, "event store engine: "+strings.Join(server.EventEngines(), ", "))
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the server's whole run to this file (for ingest work)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{fmt.Sprintf("server: unexpected argument %q", pos[0])}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *data == "" {
		return usageError{"server: --data DIR is required"}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Sprintf("--log-level %q: %v", *logLevel, err)}
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(stderr, hopts)
	default:
		return usageError{fmt.Sprintf("--log-format %q: want text or json", *logFormat)}
	}
	srv, err := server.New(server.Options{DataDir: *data, Listen: *listen, Hostnames: hostnames, EventEngine: *engine, Logger: slog.New(h)})
	if err != nil {
		return err
	}
	info := srv.Info()
	fmt.Fprintf(stdout, "mamori server listening on %s (data %s)\n", info.URL, *data)
	fmt.Fprintf(stdout, "  enroll an agent:  mamori token create --data %s\n", *data)
	fmt.Fprintf(stdout, "                    mamori-agent --server %s --enroll-token TOKEN --data /var/lib/mamori-agent\n", info.URL)
	fmt.Fprintf(stdout, "  query:            mamori hosts --data %s; mamori events --data %s --since 10m\n", *data, *data)
	fmt.Fprintf(stdout, "  API:              %s/api/v1/openapi.json (Bearer key in %s/%s)\n", info.URL, *data, info.AdminTokenFile)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return srv.Run(ctx)
}

// clientFlags adds the flags that say how to reach the server.
type clientFlags struct {
	data, server, cred, ca, tenant *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		data:   fs.String("data", os.Getenv("MAMORI_DATA"), "server data directory (finds URL, CA and admin key there)"),
		server: fs.String("server", "", "server URL, e.g. https://edr.example:8443"),
		cred:   fs.String("credential", "", "file holding an API key"),
		ca:     fs.String("ca", "", "CA certificate of the server (PEM)"),
		tenant: fs.String("tenant", "", "tenant to act on (root admins only)"),
	}
}

func (c clientFlags) client() (*apiclient.Client, error) {
	if *c.server != "" {
		if *c.cred == "" {
			return nil, usageError{"--server needs --credential FILE"}
		}
		return apiclient.FromFiles(*c.server, *c.cred, *c.ca)
	}
	if *c.data == "" {
		return nil, usageError{"say where the server is: --data DIR (or MAMORI_DATA) or --server URL --credential FILE"}
	}
	return apiclient.FromDataDir(*c.data)
}

func cmdTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token create", stderr)
	cf := addClientFlags(fs)
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	uses := fs.Int("uses", 1, "how many agents may enroll with it")
	note := fs.String("note", "", "free text kept with the token")
	asJSON := fs.Bool("json", false, "print the token object as JSON")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{fmt.Sprintf("token create: unexpected argument %q", pos[0])}
	}
	if *ttl < time.Second || *uses < 1 {
		return usageError{"token create: --ttl must be at least 1s and --uses at least 1"}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	tr, err := c.CreateToken(ctx, api.TokenRequest{Tenant: *cf.tenant, TTLSeconds: int64(ttl.Seconds()), Uses: *uses, Note: *note})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(tr)
	}
	fmt.Fprintln(stdout, tr.Token)
	return nil
}

func cmdHosts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("hosts", stderr)
	cf := addClientFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per host")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{fmt.Sprintf("hosts: unexpected argument %q", pos[0])}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	hosts, err := c.Hosts(ctx, *cf.tenant)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, h := range hosts {
			if err := enc.Encode(h); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tLAST SEEN\tSENSOR\tEVENTS/S\tDROPS\tSPOOL\tISOLATED\tREVOKED")
	for _, h := range hosts {
		st := summarize(h.Status)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", h.ID, h.Hostname, ago(h.LastSeen), st.sensor, st.rate, st.drops, st.spool, st.isolated, h.Revoked)
	}
	return tw.Flush()
}

type statusSummary struct{ sensor, rate, drops, spool, isolated string }

// summarize picks the columns of `mamori hosts` out of an agent's status JSON.
func summarize(raw json.RawMessage) statusSummary {
	out := statusSummary{"-", "-", "-", "-", "-"}
	var st struct {
		SensorMode  string            `json:"sensor_mode"`
		EventsPerS  *float64          `json:"events_per_s"`
		RingDropped map[string]uint64 `json:"ring_dropped"`
		Spool       *struct {
			Bytes   int64  `json:"bytes"`
			Pending uint64 `json:"pending"`
		} `json:"spool"`
		Loss      *schema.Loss          `json:"loss"`
		Isolation *wire.IsolationStatus `json:"isolation"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &st) != nil {
		return out
	}
	if i := st.Isolation; i != nil {
		out.isolated = "no"
		if i.Isolated {
			out.isolated = "yes (" + strings.Join(i.Layers, "+") + ")"
		}
		if i.Error != "" {
			out.isolated += " error"
		}
	}
	if st.SensorMode != "" {
		out.sensor = st.SensorMode
	}
	if st.EventsPerS != nil {
		out.rate = fmt.Sprintf("%.1f", *st.EventsPerS)
	}
	var drops uint64
	known := st.RingDropped != nil
	for _, n := range st.RingDropped {
		drops += n
	}
	if st.Loss != nil {
		known = true
		drops += st.Loss.SpoolDropped + st.Loss.SpoolCorrupt
		if st.RingDropped == nil {
			for _, n := range st.Loss.RingDropped {
				drops += n
			}
		}
	}
	if known {
		out.drops = fmt.Sprint(drops)
	}
	if st.Spool != nil {
		out.spool = fmt.Sprintf("%s/%d", bytesHuman(st.Spool.Bytes), st.Spool.Pending)
	}
	return out
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, usageError{fmt.Sprintf("--%s %q: want RFC 3339 such as 2006-01-02T15:04:05Z", name, v)}
	}
	return t, nil
}

func cmdEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("events", stderr)
	cf := addClientFlags(fs)
	from := fs.String("from", "", "start time, RFC 3339 (inclusive)")
	to := fs.String("to", "", "end time, RFC 3339 (exclusive)")
	since := fs.Duration("since", 0, "only events of the last DURATION (e.g. 10m)")
	var hosts, types, where stringList
	fs.Var(&hosts, "host", "host id (repeatable)")
	fs.Var(&types, "type", "event type (repeatable): "+typeNames())
	fs.Var(&where, "where", "condition (repeatable, all must hold): "+query.Syntax)
	limit := fs.Int("limit", 1000, "most events to return")
	desc := fs.Bool("desc", false, "newest first")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{fmt.Sprintf("events: unexpected argument %q", pos[0])}
	}
	f := apiclient.EventFilter{Tenant: *cf.tenant, Hosts: hosts, Types: types, Where: where, Limit: *limit, Desc: *desc}
	var err error
	if f.From, err = parseTime("from", *from); err != nil {
		return err
	}
	if f.To, err = parseTime("to", *to); err != nil {
		return err
	}
	if *since > 0 {
		if !f.From.IsZero() {
			return usageError{"events: give --from or --since, not both"}
		}
		f.From = time.Now().Add(-*since)
	}
	for _, t := range types {
		if !schema.EventType(t).Valid() {
			return usageError{fmt.Sprintf("--type %q: want one of %s", t, typeNames())}
		}
	}
	if _, err := query.ParseConditions(where); err != nil {
		return usageError{fmt.Sprintf("--where: %v", err)}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return c.StreamEvents(ctx, f, func(ev schema.Event) error { return enc.Encode(ev) })
	}
	evs, err := c.Events(ctx, f)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tHOST\tTYPE\tPID\tEXE\tARGS")
	for _, ev := range evs {
		pid, exe, args := "-", "-", ""
		if p := ev.Process; p != nil {
			pid, exe, args = fmt.Sprint(p.PID), p.Exe, oneLine(p.CommandLine(), 120)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format("2006-01-02 15:04:05.000"), short(ev.HostID), ev.Type, pid, exe, args)
	}
	return tw.Flush()
}

func typeNames() string {
	var s []string
	for _, t := range schema.KnownEventTypes {
		s = append(s, string(t))
	}
	return strings.Join(s, ", ")
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

func cmdTree(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tree", stderr)
	cf := addClientFlags(fs)
	asJSON := fs.Bool("json", false, "print the tree as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"tree: want exactly one process entity id (BOOTID:PID:START)"}
	}
	if _, _, _, err := schema.ParseEntityID(pos[0]); err != nil {
		return usageError{err.Error()}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	t, err := c.Tree(ctx, pos[0], *cf.tenant)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(t)
	}
	printTree(stdout, t)
	return nil
}

// printTree prints ancestors down to the process, then its descendants
// indented by depth, each followed by its events.
func printTree(w io.Writer, t api.Tree) {
	line := func(depth int, p schema.Process, mark string) {
		ind := strings.Repeat("  ", depth)
		exit := ""
		if p.ExitCode != nil {
			exit = fmt.Sprintf(" exit=%d", *p.ExitCode)
		}
		fmt.Fprintf(w, "%s%s%d %s  %s  [%s]%s\n", ind, mark, p.PID, p.Exe, oneLine(p.CommandLine(), 160), p.EntityID, exit)
		evs := t.Events[p.EntityID]
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
		for _, ev := range evs {
			fmt.Fprintf(w, "%s    %s %s\n", ind, ev.Time.Local().Format("15:04:05.000"), ev.Type)
		}
	}
	for i, p := range t.Ancestors {
		line(i, p, "")
	}
	base := len(t.Ancestors)
	line(base, t.Process, "* ")
	depth := map[string]int{t.Process.EntityID: base}
	for _, p := range t.Descendants {
		d := depth[p.ParentEntityID] + 1
		depth[p.EntityID] = d
		line(d, p, "")
	}
	if t.Truncated {
		fmt.Fprintln(w, "(tree truncated at its depth or size bound)")
	}
}
