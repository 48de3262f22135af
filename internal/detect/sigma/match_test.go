package sigma

import (
	"errors"
	"strings"
	"testing"
)

func mustParse(t testing.TB, y string) *Rule {
	t.Helper()
	r, err := ParseRule([]byte(y))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, y)
	}
	return r
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// rule wraps a detection body (indented by 2) into a full rule.
func rule(det string) string {
	return "title: t\nid: r1\nlogsource: {category: process_creation, product: linux}\ndetection:\n" + det
}

type mcase struct {
	name string
	det  string
	ev   MapEvent
	want bool
}

func ev(kv ...any) MapEvent {
	e := MapEvent{Fields: map[string]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		e.Fields[kv[i].(string)] = kv[i+1]
	}
	return e
}

func kw(text ...string) MapEvent { return MapEvent{Text: text, Fields: map[string]any{}} }

func runCases(t *testing.T, cases []mcase, opts CompileOptions) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := mustParse(t, rule(c.det))
			m, err := Compile(r, opts)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if got := m.Match(c.ev); got != c.want {
				t.Fatalf("Match = %v, want %v\n%s\nevent %+v", got, c.want, c.det, c.ev)
			}
		})
	}
}

// TestDetectionSemantics follows sigma-rules-specification.md "Detection".
func TestDetectionSemantics(t *testing.T) {
	runCases(t, []mcase{
		// General: values are case-insensitive strings.
		{"equal case-insensitive", "  s: {Image: '/usr/bin/WHOAMI'}\n  condition: s", ev("Image", "/usr/bin/whoami"), true},
		{"equal is whole value", "  s: {Image: '/usr/bin/whoami'}\n  condition: s", ev("Image", "/usr/bin/whoami2"), false},
		// Maps: AND of fields.
		{"map and", "  s: {A: x, B: y}\n  condition: s", ev("A", "x", "B", "y"), true},
		{"map and miss", "  s: {A: x, B: y}\n  condition: s", ev("A", "x", "B", "z"), false},
		// Lists of values: OR.
		{"value list or", "  s: {EventID: [517, 1102]}\n  condition: s", ev("EventID", int64(1102)), true},
		{"value list none", "  s: {EventID: [517, 1102]}\n  condition: s", ev("EventID", int64(4)), false},
		// Lists of maps: OR.
		{"list of maps", "  s:\n    - Image|endswith: '\\example.exe'\n    - Description|contains: 'Test executable'\n  condition: s", ev("Description", "a test executable here"), true},
		{"list of maps none", "  s:\n    - Image|endswith: '\\example.exe'\n    - Description|contains: 'Test executable'\n  condition: s", ev("Image", "x.exe"), false},
		// Numbers vs strings: 4688 matches int and string forms; '0x17' is a string.
		{"int matches string", "  s: {EventID: 4688}\n  condition: s", ev("EventID", "4688"), true},
		{"int matches uint", "  s: {EventID: 4688}\n  condition: s", ev("EventID", uint64(4688)), true},
		{"hex string literal", "  s: {T: '0x17'}\n  condition: s", ev("T", "0x17"), true},
		{"hex string not int", "  s: {T: '0x17'}\n  condition: s", ev("T", int64(23)), false},
		{"bool value", "  s: {Flag: true}\n  condition: s", ev("Flag", true), true},
		// Multi-valued event fields: any element.
		{"list field any", "  s: {a1|contains: '-c'}\n  condition: s", ev("a1", []any{"x", "sh -c id"}), true},
		// Special values: '' and null.
		{"empty matches empty", "  s: {B: ''}\n  condition: s", ev("B", ""), true},
		{"empty not absent", "  s: {B: ''}\n  condition: s", ev(), false},
		{"null absent", "  s: {B: null}\n  condition: s", ev("A", "x"), true},
		{"null nil", "  s: {B: null}\n  condition: s", ev("B", nil), true},
		{"null not value", "  s: {B: null}\n  condition: s", ev("B", "x"), false},
		{"not null", "  s: {A: x}\n  f: {B: null}\n  condition: s and not f", ev("A", "x", "B", "v"), true},
		// Wildcards and escaping.
		{"star", "  s: {I: 'prog*.exe'}\n  condition: s", ev("I", "progA12.exe"), true},
		{"question", "  s: {I: 'prog?.exe'}\n  condition: s", ev("I", "progA.exe"), true},
		{"question one char", "  s: {I: 'prog?.exe'}\n  condition: s", ev("I", "progAB.exe"), false},
		{"escaped star literal", `  s: {I: 'a\*b'}` + "\n  condition: s", ev("I", "a*b"), true},
		{"escaped star not wildcard", `  s: {I: 'a\*b'}` + "\n  condition: s", ev("I", "axxb"), false},
		{"plain backslash", `  s: {I: 'C:\Windows\x'}` + "\n  condition: s", ev("I", `c:\windows\x`), true},
		{"double backslash then star", `  s: {I: 'C:\\*'}` + "\n  condition: s", ev("I", `C:\anything`), true},
		{"triple backslash star", `  s: {I: 'C:\\\*'}` + "\n  condition: s", ev("I", `C:\*`), true},
		{"triple backslash star literal", `  s: {I: 'C:\\\*'}` + "\n  condition: s", ev("I", `C:\x`), false},
		{"four backslashes", `  s: {I: 'a\\\\b'}` + "\n  condition: s", ev("I", `a\\b`), true},
		{"glob middle", "  s: {I: '/tmp/*/x*y'}\n  condition: s", ev("I", "/tmp/a/b/xzzy"), true},
		{"glob order", "  s: {I: '*ab*cd*'}\n  condition: s", ev("I", "cd ab"), false},
		// Keywords: field-less, anywhere, OR; |all AND.
		{"keywords or", "  keywords: ['event::clear', 'event::drop']\n  condition: keywords", kw("mimikatz event::DROP now"), true},
		{"keywords none", "  keywords: ['event::clear']\n  condition: keywords", kw("nothing"), false},
		{"keywords all", "  k:\n    '|all': ['OabVirtualDirectory', ' -ExternalUrl ']\n  condition: k", kw("Set-OabVirtualDirectory -ExternalUrl x"), true},
		{"keywords all miss", "  k:\n    '|all': ['OabVirtualDirectory', ' -ExternalUrl ']\n  condition: k", kw("Set-OabVirtualDirectory"), false},
		{"keyword wildcard", "  k: ['rm * /etc']\n  condition: k", kw("sudo rm -rf /etc"), true},
	}, CompileOptions{})
}

// TestModifiers follows sigma-appendix-modifiers.md, one case per modifier use.
func TestModifiers(t *testing.T) {
	runCases(t, []mcase{
		{"contains", "  s: {C|contains: 'WGET'}\n  condition: s", ev("C", "sh -c wget x"), true},
		{"startswith", "  s: {C|startswith: 'adm'}\n  condition: s", ev("C", "ADMIN"), true},
		{"startswith miss", "  s: {C|startswith: 'adm'}\n  condition: s", ev("C", "xadm"), false},
		{"endswith", "  s: {C|endswith: '/cmd'}\n  condition: s", ev("C", "/bin/CMD"), true},
		{"contains all", "  s: {C|contains|all: [' -e ', 'nc']}\n  condition: s", ev("C", "nc -e /bin/sh"), true},
		{"contains all miss", "  s: {C|contains|all: [' -e ', 'nc']}\n  condition: s", ev("C", "nc -l"), false},
		{"cased hit", "  s: {C|cased: 'Foo'}\n  condition: s", ev("C", "Foo"), true},
		{"cased miss", "  s: {C|cased: 'Foo'}\n  condition: s", ev("C", "foo"), false},
		{"contains cased", "  s: {C|contains|cased: 'Foo'}\n  condition: s", ev("C", "xfoox"), false},
		{"exists true", "  s: {C|exists: true}\n  condition: s", ev("C", ""), true},
		{"exists true null", "  s: {C|exists: true}\n  condition: s", ev("C", nil), true},
		{"exists false", "  s: {C|exists: false}\n  condition: s", ev("D", 1), true},
		{"exists false present", "  s: {C|exists: false}\n  condition: s", ev("C", "x"), false},
		{"neq", "  s: {U|neq: root}\n  condition: s", ev("U", "alice"), true},
		{"neq equal", "  s: {U|neq: root}\n  condition: s", ev("U", "ROOT"), false},
		{"neq list", "  s: {U|neq: [root, admin]}\n  condition: s", ev("U", "admin"), false},
		{"windash slash", "  s: {C|windash|contains: ' -s '}\n  condition: s", ev("C", "x /s y"), true},
		{"windash en dash", "  s: {C|windash|contains: ' -s '}\n  condition: s", ev("C", "x –s y"), true},
		{"windash other", "  s: {C|windash|contains: ' -s '}\n  condition: s", ev("C", "x +s y"), false},
		{"re search", "  s: {C|re: 'nc.+-e'}\n  condition: s", ev("C", "/bin/nc 1 -e sh"), true},
		{"re case-sensitive", "  s: {C|re: 'NC'}\n  condition: s", ev("C", "nc"), false},
		{"re i", "  s: {C|re|i: 'NC'}\n  condition: s", ev("C", "nc"), true},
		{"re m", "  s: {C|re|m: '^b$'}\n  condition: s", ev("C", "a\nb\nc"), true},
		{"re no m", "  s: {C|re: '^b$'}\n  condition: s", ev("C", "a\nb\nc"), false},
		{"re s", "  s: {C|re|s: 'a.b'}\n  condition: s", ev("C", "a\nb"), true},
		{"re no s", "  s: {C|re: 'a.b'}\n  condition: s", ev("C", "a\nb"), false},
		{"cidr v4", "  s: {Ip|cidr: 10.0.0.0/8}\n  condition: s", ev("Ip", "10.1.2.3"), true},
		{"cidr v4 miss", "  s: {Ip|cidr: 10.0.0.0/8}\n  condition: s", ev("Ip", "11.1.2.3"), false},
		{"cidr v6", "  s: {Ip|cidr: 'fe80::/10'}\n  condition: s", ev("Ip", "fe80::1"), true},
		{"cidr v4-mapped", "  s: {Ip|cidr: 127.0.0.0/8}\n  condition: s", ev("Ip", "::ffff:127.0.0.1"), true},
		{"cidr list", "  s: {Ip|cidr: [10.0.0.0/8, 192.168.0.0/16]}\n  condition: s", ev("Ip", "192.168.1.1"), true},
		{"base64", "  s: {C|base64: 'cmd'}\n  condition: s", ev("C", "Y21k"), true},
		{"base64 contains", "  s: {C|base64|contains: 'http://'}\n  condition: s", ev("C", "echo aHR0cDovLw== | base64 -d"), true},
		{"base64offset 0", "  s: {C|base64offset|contains: 'http://'}\n  condition: s", ev("C", "x aHR0cDovL y"), true},
		{"base64offset 1", "  s: {C|base64offset|contains: 'http://'}\n  condition: s", ev("C", "IGh0dHA6Ly8="), true},
		{"base64offset 2", "  s: {C|base64offset|contains: 'http://'}\n  condition: s", ev("C", "ICBodHRwOi8v"), true},
		{"base64offset miss", "  s: {C|base64offset|contains: 'http://'}\n  condition: s", ev("C", "aHR0cHM6Ly8="), false},
		{"utf16le", "  s: {C|utf16le|contains: 'cmd'}\n  condition: s", ev("C", "x c\x00m\x00d\x00 y"), true},
		{"wide", "  s: {C|wide: 'cmd'}\n  condition: s", ev("C", "c\x00m\x00d\x00"), true},
		{"utf16be", "  s: {C|utf16be: 'cmd'}\n  condition: s", ev("C", "\x00c\x00m\x00d"), true},
		{"utf16 bom", "  s: {C|utf16: 'cmd'}\n  condition: s", ev("C", "\xff\xfec\x00m\x00d\x00"), true},
		{"wide base64offset", "  s: {C|wide|base64offset|contains: 'ping'}\n  condition: s", ev("C", "cABpAG4AZwA="), true},
		{"lt", "  s: {N|lt: 10}\n  condition: s", ev("N", int64(9)), true},
		{"lt equal", "  s: {N|lt: 10}\n  condition: s", ev("N", int64(10)), false},
		{"lte", "  s: {N|lte: 10}\n  condition: s", ev("N", "10"), true},
		{"gt float", "  s: {N|gt: 1.5}\n  condition: s", ev("N", 1.6), true},
		{"gte", "  s: {N|gte: 1000}\n  condition: s", ev("N", uint64(999)), false},
		{"gt non-number", "  s: {N|gt: 1}\n  condition: s", ev("N", "abc"), false},
		{"fieldref", "  s: {User|fieldref: Target}\n  condition: s", ev("User", "Bob", "Target", "bob"), true},
		{"fieldref miss", "  s: {User|fieldref: Target}\n  condition: s", ev("User", "bob", "Target", "eve"), false},
		{"fieldref neq", "  s: {User|fieldref|neq: Target}\n  condition: s", ev("User", "bob", "Target", "eve"), true},
		{"expand", "  s: {User|expand: '%Admins%'}\n  condition: s", ev("User", "alice"), true},
		{"expand escaped percent", "  s: {P|expand: '\\%plain%Admins%'}\n  condition: s", ev("P", "%plainroot"), true},
		{"hour", "  s: {T|hour: 3}\n  condition: s", ev("T", "2024-01-02T03:04:05Z"), true},
		{"hour gte", "  s: {T|hour|gte: 22}\n  condition: s", ev("T", "2024-01-02T03:04:05Z"), false},
		{"year unix", "  s: {T|year: 2024}\n  condition: s", ev("T", int64(1704164645)), true},
	}, CompileOptions{Placeholders: map[string][]string{"Admins": {"root", "alice"}}})
}

// TestConditions follows sigma-rules-specification.md "Condition".
func TestConditions(t *testing.T) {
	base := "  sel_a: {A: x}\n  sel_b: {B: x}\n  filter_c: {C: x}\n  _hidden: {D: x}\n"
	cases := []struct {
		cond string
		ev   MapEvent
		want bool
	}{
		{"sel_a and sel_b", ev("A", "x", "B", "x"), true},
		{"sel_a and sel_b", ev("A", "x"), false},
		{"sel_a or sel_b", ev("B", "x"), true},
		{"sel_a and not filter_c", ev("A", "x", "C", "x"), false},
		{"sel_a and not filter_c", ev("A", "x"), true},
		{"1 of sel_*", ev("B", "x"), true},
		{"all of sel_*", ev("B", "x"), false},
		{"all of sel_*", ev("A", "x", "B", "x"), true},
		{"1 of them", ev("D", "x"), false}, // _hidden excluded from them
		{"1 of them", ev("C", "x"), true},
		{"all of them", ev("A", "x", "B", "x", "C", "x"), true},
		{"2 of sel_*", ev("A", "x", "B", "x"), true},
		{"1 of _hid*", ev("D", "x"), true},
		{"sel_a and (sel_b or filter_c)", ev("A", "x", "C", "x"), true},
		// precedence: or < and < not
		{"sel_a or sel_b and filter_c", ev("A", "x"), true},
		{"(sel_a or sel_b) and filter_c", ev("A", "x"), false},
		{"not sel_a and sel_b", ev("B", "x"), true},
		{"not sel_a and sel_b", ev("A", "x"), false},
		{"not 1 of sel_*", ev("C", "x"), true},
		{"sel_a AND NOT filter_c", ev("A", "x"), true},
	}
	for _, c := range cases {
		t.Run(c.cond, func(t *testing.T) {
			m, err := Compile(mustParse(t, rule(base+"  condition: "+c.cond)), CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(c.ev); got != c.want {
				t.Fatalf("%q on %v = %v, want %v", c.cond, c.ev.Fields, got, c.want)
			}
		})
	}
	// A condition list is an OR of its entries.
	m, err := Compile(mustParse(t, rule(base+"  condition:\n    - sel_a\n    - sel_b")), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Match(ev("B", "x")) || m.Match(ev("C", "x")) {
		t.Fatal("condition list is not an OR")
	}
}

// TestHostileRules checks every bad rule gives a clear error naming the line.
func TestHostileRules(t *testing.T) {
	cases := []struct {
		name, y, want string
	}{
		{"not yaml", "title: [", "yaml"},
		{"scalar doc", "just a string", "must be a mapping"},
		{"no title", "logsource: {}\ndetection: {s: {a: b}, condition: s}", "missing required field title"},
		{"no detection", "title: t\nlogsource: {}", "missing required field detection"},
		{"no condition", "title: t\nlogsource: {}\ndetection:\n  s: {a: b}", "missing condition"},
		{"bad condition", "title: t\nlogsource: {}\ndetection:\n  s: {a: b}\n  condition: s and (", ":5: condition"},
		{"aggregation", "title: t\nlogsource: {}\ndetection:\n  s: {a: b}\n  condition: s | count() > 5", "deprecated"},
		{"null in list", "title: t\nlogsource: {}\ndetection:\n  s:\n    a: ['', null]\n  condition: s", ":5: field \"a\": null cannot be part"},
		{"nested map value", "title: t\nlogsource: {}\ndetection:\n  s:\n    a: {b: c}\n  condition: s", ":5: field \"a\": value must be"},
		{"logsource list", "title: t\nlogsource: [a]\ndetection: {s: {a: b}, condition: s}", ":2: logsource must be a mapping"},
		{"duplicate key", "title: t\ntitle: u\nlogsource: {}\ndetection: {s: {a: b}, condition: s}", "duplicate key"},
		{"bad corr type", "title: t\ncorrelation:\n  type: nope\n  rules: [a]\n  timespan: 1h", ":3: unknown correlation type"},
		{"bad timespan", "title: t\ncorrelation:\n  type: temporal\n  rules: [a]\n  timespan: 1y", "timespan"},
		{"corr no field", "title: t\ncorrelation:\n  type: value_count\n  rules: [a]\n  timespan: 1h\n  group-by: [x]\n  condition: {gte: 3}", "missing field"},
		{"two docs", "title: a\nlogsource: {}\ndetection: {s: {a: b}, condition: s}\n---\ntitle: b\nlogsource: {}\ndetection: {s: {a: b}, condition: s}", "expected one rule"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRule([]byte(c.y))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want containing %q", err, c.want)
			}
			if !errors.Is(err, ErrInvalidRule) {
				t.Fatalf("err %v does not match ErrInvalidRule", err)
			}
		})
	}
}

// TestCompileErrors checks rules that parse but cannot compile give clear errors.
func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name, det string
		want      error
	}{
		{"unknown modifier", "  s: {a|bogus: x}\n  condition: s", ErrUnknownModifier},
		{"undefined identifier", "  s: {a: x}\n  condition: t", ErrCondition},
		{"pattern matches nothing", "  s: {a: x}\n  condition: 1 of f*", ErrCondition},
		{"bad regex", "  s: {a|re: '('}\n  condition: s", ErrModifier},
		{"bad cidr", "  s: {a|cidr: 'x/8'}\n  condition: s", ErrModifier},
		{"lt string", "  s: {a|lt: abc}\n  condition: s", ErrModifier},
		{"flag without re", "  s: {a|i: x}\n  condition: s", ErrModifier},
		{"base64 wildcard", "  s: {a|contains|base64: x}\n  condition: s", ErrModifier},
		{"unresolved placeholder", "  s: {a|expand: '%nope%'}\n  condition: s", ErrUnresolvedPlaceholder},
		{"exists string", "  s: {a|exists: yes please}\n  condition: s", ErrModifier},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(mustParse(t, rule(c.det)), CompileOptions{})
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}
