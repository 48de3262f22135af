// Command mamori-agent is Mamori's endpoint agent: it enrolls with a server
// once, then collects process telemetry with eBPF, spools it to disk and
// ships it over mutual TLS. Wiring only; the logic lives in internal/agent.
//
//	mamori-agent --server URL --enroll-token T --data DIR   enroll if needed, then run
//	mamori-agent --data DIR                                 run with the stored identity
//	mamori-agent status --data DIR [--json]                 show the running agent's status
//	mamori-agent version
package main

import (
	"cmp"
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
	"syscall"

	"github.com/mamori-edr/mamori/internal/agent"
	"github.com/mamori-edr/mamori/internal/agent/transport"
	"github.com/mamori-edr/mamori/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "mamori-agent", version.Version)
			return 0
		case "status":
			return status(args[1:], stdout, stderr)
		case "help", "-h", "--help":
			usage(stdout)
			return 0
		}
	}
	return runAgent(args, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  mamori-agent --server URL --enroll-token T --data DIR   enroll if needed, then run
  mamori-agent --data DIR                                 run with the stored identity
  mamori-agent status --data DIR [--json]                 status of the running agent
  mamori-agent version
Flags also come from MAMORI_SERVER, MAMORI_ENROLL_TOKEN and MAMORI_DATA.

Endpoints (ways to reach the server, tried in order, earlier preferred; the
list is stored in DIR/endpoints.json, mode 0600, and reused on later runs):
  --server URL          first endpoint, direct
  --endpoint SPEC       repeatable, after --server:
      direct:https://server:8443
      proxy:http://user:pass@proxyhost:3128@https://server:8443
                        HTTP CONNECT proxy with Basic auth (percent-encode
                        '@' or ':' in the password); TLS stays end to end
Direct endpoints honour HTTPS_PROXY and NO_PROXY like other Go programs.
`)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func runAgent(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mamori-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr); fs.PrintDefaults() }
	server := fs.String("server", envOr("MAMORI_SERVER", ""), "server URL for enrollment (env MAMORI_SERVER)")
	token := fs.String("enroll-token", envOr("MAMORI_ENROLL_TOKEN", ""), "one-time enrollment token (env MAMORI_ENROLL_TOKEN)")
	dataDir := fs.String("data", envOr("MAMORI_DATA", agent.DefaultDataDir), "data directory (env MAMORI_DATA)")
	reenroll := fs.Bool("force-enroll", false, "enroll again even if already enrolled")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	noSensor := fs.Bool("no-sensor", false, "run without the eBPF sensor (ships the /proc snapshot only)")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the agent's whole run to this file (for overhead work)")
	var endpoints []transport.Endpoint
	var endpointErr error
	// Parse errors are reported after fs.Parse: the flag package would echo
	// the value, proxy password included.
	fs.Func("endpoint", "a way to reach the server, repeatable, tried in order (see above)", func(s string) error {
		ep, err := transport.ParseEndpoint(s)
		if err != nil {
			endpointErr = cmp.Or(endpointErr, err)
		}
		endpoints = append(endpoints, ep)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if endpointErr != nil {
		fmt.Fprintln(stderr, "mamori-agent: --endpoint:", endpointErr)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mamori-agent: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "mamori-agent:", err)
		return 2
	}
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if len(endpoints) > 0 && *server != "" {
		endpoints = append([]transport.Endpoint{{URL: *server}}, endpoints...)
	}
	if *server == "" && len(endpoints) > 0 {
		*server = endpoints[0].URL
	}

	_, err = transport.LoadIdentity(*dataDir)
	switch {
	case err == nil && !*reenroll:
	case err == nil || errors.Is(err, transport.ErrNotEnrolled):
		if *server == "" || *token == "" {
			log.Error("not enrolled: give --server and --enroll-token (or MAMORI_SERVER and MAMORI_ENROLL_TOKEN)", "data", *dataDir)
			return 1
		}
		id, err := transport.Enroll(ctx, *server, *token, *dataDir, transport.LocalHostInfo(), transport.EnrollOptions{Force: *reenroll, Endpoints: endpoints})
		if err != nil {
			log.Error("enrollment failed", "server", *server, "err", err)
			return 1
		}
		log.Info("enrolled", "host_id", id.HostID, "tenant", id.Tenant, "server", id.Server)
	default:
		log.Error("cannot load identity", "data", *dataDir, "err", err)
		return 1
	}

	if len(endpoints) > 0 {
		if err := transport.SaveEndpoints(*dataDir, endpoints); err != nil {
			log.Error("cannot store endpoints", "err", err)
			return 1
		}
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Error("cpu profile", "err", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("cpu profile", "err", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	a, err := agent.New(agent.Config{DataDir: *dataDir, Logger: log, NoSensor: *noSensor})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func status(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mamori-agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", envOr("MAMORI_DATA", agent.DefaultDataDir), "data directory (env MAMORI_DATA)")
	asJSON := fs.Bool("json", false, "print the status as JSON (wire.AgentStatus)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, err := agent.QueryStatus(*dataDir)
	if err != nil {
		if errors.Is(err, agent.ErrNotRunning) {
			fmt.Fprintf(stderr, "agent not running (no answer on %s/%s)\n", *dataDir, agent.SocketFile)
			return 3
		}
		fmt.Fprintln(stderr, "mamori-agent status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	agent.FormatStatus(stdout, st)
	return 0
}
