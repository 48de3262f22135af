// Package fieldmap maps Mamori's events onto Sigma's Linux taxonomy, so that
// SigmaHQ rules run over them unchanged: it says which Sigma fields each
// logsource can be given (FieldMap, for sigma.Compile) and presents an event
// as the records of every logsource it belongs to (ForEvent).
//
// The trap: a rule naming a field this mapping cannot fill would compile and
// never fire. Field refuses such fields with a reason, so `mamori rules
// check` reports the rule instead of pretending to run it.
//
// Mapping (product linux):
//
//	process_creation    <- process_exec
//	  Image, CommandLine, CurrentDirectory, User, LogonId (login session),
//	  ProcessId, ParentProcessId, ProcessGuid, ParentProcessGuid (entity ids),
//	  ParentImage, ParentCommandLine, Hashes ("SHA256=…,MD5=…"), sha256, md5
//	network_connection  <- network_connect (Initiated true), network_accept (false)
//	  Image, CommandLine, ProcessId, User, Initiated, Protocol, SourceIp,
//	  SourcePort, DestinationIp, DestinationPort, SourceIsIpv6, DestinationIsIpv6
//	service auditd      <- process_exec, as its EXECVE and SYSCALL records
//	  type (EXECVE or SYSCALL), a0…a31, argc, exe, comm, cwd, pid, ppid,
//	  uid, euid, gid, egid, auid, ses, syscall (execve), success (yes)
//
// Keyword searches run over the command line (process_creation, auditd).
// Everything else is refused with the reason: file_event and the other
// categories need telemetry the agent does not record yet, DestinationHostname
// needs DNS attribution, and log-line services (sshd, syslog, …) need the
// agent to ship logs.
package fieldmap

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/mamori-edr/mamori/internal/detect/sigma"
	"github.com/mamori-edr/mamori/internal/schema"
)

// Kind is a Sigma logsource Mamori serves.
type Kind int

// Logsources served.
const (
	None Kind = iota
	ProcessCreation
	NetworkConnection
	Auditd
)

// KindOf names the logsource a rule asks for (None when Mamori has none).
func KindOf(ls sigma.LogSource) Kind {
	if ls.Product != "" && ls.Product != "linux" {
		return None
	}
	switch {
	case ls.Service == "auditd" && ls.Category == "":
		return Auditd
	case ls.Service != "":
		return None
	case ls.Category == "process_creation":
		return ProcessCreation
	case ls.Category == "network_connection":
		return NetworkConnection
	}
	return None
}

var fields = map[Kind]map[string]bool{
	ProcessCreation: set("Image", "CommandLine", "CurrentDirectory", "User", "LogonId", "ProcessId", "ParentProcessId",
		"ProcessGuid", "ParentProcessGuid", "ParentImage", "ParentCommandLine", "Hashes", "sha256", "md5"),
	NetworkConnection: set("Image", "CommandLine", "ProcessId", "User", "Initiated", "Protocol", "SourceIp", "SourcePort",
		"DestinationIp", "DestinationPort", "SourceIsIpv6", "DestinationIsIpv6"),
	Auditd: set("type", "argc", "exe", "comm", "cwd", "pid", "ppid", "uid", "euid", "gid", "egid", "auid", "ses", "syscall", "success"),
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// maxArgs is how many auditd aN fields an EXECVE record carries here.
const maxArgs = 32

// Field is a sigma.CompileOptions.FieldMap: it returns the field unchanged
// when the logsource can provide it, else an *sigma.UnmappedFieldError with
// the reason.
func Field(ls sigma.LogSource, field string) (string, error) {
	k := KindOf(ls)
	if k == None {
		return "", &sigma.UnmappedFieldError{Field: field, LogSource: ls, Reason: "logsource " + describe(ls) + ": " + missing(ls)}
	}
	if fields[k][field] {
		return field, nil
	}
	if k == Auditd && isArgField(field) {
		return field, nil
	}
	reason := "not recorded for " + describe(ls)
	switch field {
	case "DestinationHostname":
		reason = "needs DNS attribution (telemetry issue)"
	case "key":
		reason = "audit rule keys exist only in auditd's own rules"
	case "name", "nametype", "inode":
		reason = "auditd PATH records need file telemetry (telemetry issue)"
	}
	return "", &sigma.UnmappedFieldError{Field: field, LogSource: ls, Reason: reason}
}

// Keywords is a sigma.CompileOptions.Keywords: keyword searches run over the
// command line where there is one.
func Keywords(ls sigma.LogSource) error {
	switch KindOf(ls) {
	case ProcessCreation, Auditd:
		return nil
	}
	return fmt.Errorf("logsource %s: %s", describe(ls), missing(ls))
}

func isArgField(f string) bool {
	if len(f) < 2 || f[0] != 'a' {
		return false
	}
	n, err := strconv.Atoi(f[1:])
	return err == nil && n >= 0 && n < maxArgs && strconv.Itoa(n) == f[1:]
}

func describe(ls sigma.LogSource) string {
	var parts []string
	for _, p := range []string{ls.Product, ls.Category, ls.Service} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, "/")
}

func missing(ls sigma.LogSource) string {
	switch {
	case ls.Product != "" && ls.Product != "linux":
		return "not a Linux logsource"
	case ls.Category == "file_event" || ls.Category == "file_delete" || ls.Category == "file_rename" || ls.Category == "file_change":
		return "file events are not recorded yet (telemetry issue)"
	case ls.Service != "":
		return "log lines of this service are not shipped yet (telemetry issue)"
	case ls.Category == "":
		return "keyword rules over log lines need the agent to ship logs (telemetry issue)"
	}
	return "this category is not recorded yet (telemetry issue)"
}

// Target is an event as one logsource sees it.
type Target struct {
	Kind  Kind
	Event sigma.Event
}

// ForEvent returns the logsource records ev stands for (none for events no
// rule logsource covers).
func ForEvent(ev *schema.Event) []Target {
	switch ev.Type {
	case schema.ProcessExec:
		if ev.Process == nil {
			return nil
		}
		return []Target{{ProcessCreation, procView{ev}}, {Auditd, auditView{ev}}}
	case schema.NetworkConnect, schema.NetworkAccept:
		if ev.Network == nil {
			return nil
		}
		return []Target{{NetworkConnection, netView{ev}}}
	}
	return nil
}

type procView struct{ ev *schema.Event }

func (v procView) Field(name string) (any, bool) {
	p, e := v.ev.Process, v.ev
	switch name {
	case "Image":
		return p.Exe, p.Exe != ""
	case "CommandLine":
		return p.CommandLine(), len(p.Args) > 0
	case "CurrentDirectory":
		return p.Cwd, p.Cwd != ""
	case "User":
		return p.User, p.User != ""
	case "LogonId":
		if p.SessionID == ^uint32(0) {
			return nil, false
		}
		return int64(p.SessionID), true
	case "ProcessId":
		return int64(p.PID), true
	case "ParentProcessId":
		return int64(p.PPID), true
	case "ProcessGuid":
		return p.EntityID, true
	case "ParentProcessGuid":
		return p.ParentEntityID, p.ParentEntityID != ""
	case "ParentImage":
		if e.Parent == nil || e.Parent.Exe == "" {
			return nil, false
		}
		return e.Parent.Exe, true
	case "ParentCommandLine":
		if e.Parent == nil || len(e.Parent.Args) == 0 {
			return nil, false
		}
		return strings.Join(e.Parent.Args, " "), true
	case "Hashes":
		if p.Hash == nil || p.Hash.SHA256 == "" {
			return nil, false
		}
		return "SHA256=" + strings.ToUpper(p.Hash.SHA256) + ",MD5=" + strings.ToUpper(p.Hash.MD5), true
	case "sha256":
		if p.Hash == nil || p.Hash.SHA256 == "" {
			return nil, false
		}
		return p.Hash.SHA256, true
	case "md5":
		if p.Hash == nil || p.Hash.MD5 == "" {
			return nil, false
		}
		return p.Hash.MD5, true
	}
	return nil, false
}

func (v procView) Keywords() []string { return []string{v.ev.Process.CommandLine()} }

// auditView presents an exec as auditd's EXECVE and SYSCALL records at once:
// `type` holds both, so a rule on either record type matches.
type auditView struct{ ev *schema.Event }

func (v auditView) Field(name string) (any, bool) {
	p := v.ev.Process
	switch name {
	case "type":
		return []any{"EXECVE", "SYSCALL"}, true
	case "argc":
		return int64(len(p.Args)), true
	case "exe":
		return p.Exe, p.Exe != ""
	case "comm":
		return p.Name, p.Name != ""
	case "cwd":
		return p.Cwd, p.Cwd != ""
	case "pid":
		return int64(p.PID), true
	case "ppid":
		return int64(p.PPID), true
	case "uid":
		return int64(p.UID), true
	case "euid":
		return int64(p.EUID), true
	case "gid":
		return int64(p.GID), true
	case "egid":
		return int64(p.EGID), true
	case "auid":
		return int64(p.LoginUID), true
	case "ses":
		return int64(p.SessionID), true
	case "syscall":
		return []any{"execve", "59"}, true
	case "success":
		return "yes", true
	}
	if isArgField(name) {
		n, _ := strconv.Atoi(name[1:])
		if n < len(p.Args) {
			return p.Args[n], true
		}
	}
	return nil, false
}

func (v auditView) Keywords() []string { return []string{v.ev.Process.CommandLine()} }

type netView struct{ ev *schema.Event }

func (v netView) Field(name string) (any, bool) {
	n, p := v.ev.Network, v.ev.Process
	switch name {
	case "Image":
		if p == nil || p.Exe == "" {
			return nil, false
		}
		return p.Exe, true
	case "CommandLine":
		if p == nil || len(p.Args) == 0 {
			return nil, false
		}
		return p.CommandLine(), true
	case "ProcessId":
		if p == nil {
			return nil, false
		}
		return int64(p.PID), true
	case "User":
		if p == nil || p.User == "" {
			return nil, false
		}
		return p.User, true
	case "Initiated":
		return strconv.FormatBool(v.ev.Type == schema.NetworkConnect), true
	case "Protocol":
		return n.Protocol, n.Protocol != ""
	case "SourceIp":
		return n.SrcIP, n.SrcIP != ""
	case "SourcePort":
		return int64(n.SrcPort), n.SrcPort != 0
	case "DestinationIp":
		return n.DstIP, n.DstIP != ""
	case "DestinationPort":
		return int64(n.DstPort), true
	case "SourceIsIpv6":
		return strconv.FormatBool(isV6(n.SrcIP)), n.SrcIP != ""
	case "DestinationIsIpv6":
		return strconv.FormatBool(isV6(n.DstIP)), n.DstIP != ""
	}
	return nil, false
}

func (v netView) Keywords() []string { return nil }

func isV6(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.To4() == nil
}
