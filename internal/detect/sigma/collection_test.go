package sigma

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRuleCollection covers the legacy multi-document action: global/reset/repeat semantics.
func TestRuleCollection(t *testing.T) {
	y := `action: global
title: Shared
logsource: {category: process_creation, product: linux}
detection:
  condition: sel
---
detection:
  sel: {Image|endswith: /nc}
---
action: repeat
detection:
  sel: {Image|endswith: /ncat}
---
action: reset
---
title: Alone
logsource: {product: linux}
detection: {k: [evil], condition: k}
`
	rules, err := ParseRules([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 3 {
		t.Fatalf("got %d rules, want 3", len(rules))
	}
	for i, want := range []struct {
		title, image string
	}{{"Shared", "/usr/bin/nc"}, {"Shared", "/usr/bin/ncat"}} {
		m, err := Compile(rules[i], CompileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rules[i].Title != want.title || !m.Match(ev("Image", want.image)) {
			t.Fatalf("rule %d (%s) does not match %s", i, rules[i].Title, want.image)
		}
	}
	if rules[2].Title != "Alone" || rules[2].LogSource.Category != "" {
		t.Fatalf("reset did not drop the global part: %+v", rules[2])
	}
}

// TestParseAllFields checks every documented field of a rule lands in the model.
func TestParseAllFields(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(sharedSigma, "spec/examples/rules/rule_1.yml"))
	if err != nil {
		t.Skipf("spec example absent: %v", err)
	}
	r, err := ParseRule(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Title != "A Title" || r.ID != "545a5da6-f103-4919-a519-e9aec1026ee4" || len(r.Related) != 1 ||
		r.Related[0].Type != "similar" || r.Status != "test" || len(r.References) != 2 || r.Author != "SomeOne" ||
		r.Date != "2017-05-09" || r.Modified != "2023-04-14" || len(r.Tags) != 3 || r.LogSource.Service != "application" ||
		len(r.FalsePositives) != 1 || r.Level != "high" || r.Detection.Searches["selection"] == nil {
		t.Fatalf("fields lost: %+v", r)
	}
	r = mustParse(t, `title: c
name: corr
correlation:
  type: value_count
  rules: [a]
  group-by: [Host]
  timespan: 90m
  generate: true
  condition: {field: User, gt: 100, lte: 200}
custom_key: {x: 1}
`)
	c := r.Correlation
	if c.SpanSeconds != 5400 || !c.Generate || c.Condition.Field != "User" || c.Condition.Ops["gt"] != 100 || c.Condition.Ops["lte"] != 200 || r.Custom["custom_key"] == nil {
		t.Fatalf("correlation fields lost: %+v %+v", c, r.Custom)
	}
}

// TestHostileYAML checks alias bombs, deep nesting and huge files fail cleanly.
func TestHostileYAML(t *testing.T) {
	bomb := "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\ntitle: t\nlogsource: {}\ndetection: {s: {a: b}, condition: s}\n"
	if _, err := ParseRule([]byte(bomb)); err == nil {
		t.Fatal("alias bomb accepted")
	}
	deep := "title: t\nlogsource: {}\ndetection:\n  s: {a: b}\n  condition: " + strings.Repeat("(", 5000) + "s" + strings.Repeat(")", 5000) + "\n"
	if _, err := ParseRule([]byte(deep)); !errors.Is(err, ErrCondition) {
		t.Fatalf("deep condition: err = %v", err)
	}
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, make([]byte, maxRuleFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yml")
	if err := os.WriteFile(good, []byte("title: g\nlogsource: {}\ndetection: {s: {a: b}, condition: s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("title: b\nlogsource: {}\ndetection:\n  s: {a: b}\n  condition: s and\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, errs := LoadDir(dir)
	if len(rules) != 1 || len(errs) != 2 {
		t.Fatalf("rules %d errs %v: want the good rule kept and two errors", len(rules), errs)
	}
	for _, e := range errs {
		if strings.HasSuffix(e.File, "bad.yml") && !strings.Contains(e.Error(), "bad.yml:5: condition") {
			t.Fatalf("error does not name file and line: %v", e)
		}
	}
}

// TestMoreSemantics covers number/string equality, all on one value, neq on absent fields and windash permutations.
func TestMoreSemantics(t *testing.T) {
	runCases(t, []mcase{
		{"float rule int event", "  s: {N: 1.0}\n  condition: s", ev("N", int64(1)), true},
		{"int rule float event", "  s: {N: 3}\n  condition: s", ev("N", 3.0), true},
		{"int rule other", "  s: {N: 3}\n  condition: s", ev("N", "3.5"), false},
		{"neq absent", "  s: {U|neq: root}\n  condition: s", ev(), false},
		{"windash two flags", "  s: {C|windash|contains: ' -a -b'}\n  condition: s", ev("C", "x /a –b"), true},
		{"windash not mid-word", "  s: {C|windash: 'a-b'}\n  condition: s", ev("C", "a/b"), false},
		{"all of list field", "  s: {a|all: [x, y]}\n  condition: s", ev("a", []any{"x", "y"}), true},
		{"startswith list", "  s: {a|startswith: [foo, bar]}\n  condition: s", ev("a", "barx"), true},
	}, CompileOptions{})
	_, err := Compile(mustParse(t, rule("  s: {a|contains|all: x}\n  condition: s")), CompileOptions{})
	if !errors.Is(err, ErrModifier) {
		t.Fatalf("all with one value: err = %v", err)
	}
	// A mapping that cannot serve keyword searches reports it.
	noKw := errors.New("no keyword text for this logsource")
	_, err = Compile(mustParse(t, rule("  k: [evil]\n  condition: k")), CompileOptions{Keywords: func(LogSource) error { return noKw }})
	if !errors.Is(err, noKw) {
		t.Fatalf("keywords hook: err = %v", err)
	}
}

// TestExpandAfterContains checks expand keeps wildcards added by earlier modifiers.
func TestExpandAfterContains(t *testing.T) {
	runCases(t, []mcase{
		{"contains then expand", "  s: {P|contains|expand: '%Dir%/x'}\n  condition: s", ev("P", "a /opt/app/x b"), true},
		{"expand wildcard value", "  s: {U|expand: '%Admins%'}\n  condition: s", ev("U", "adm_zed"), true},
		{"expand miss", "  s: {U|expand: '%Admins%'}\n  condition: s", ev("U", "bob"), false},
	}, CompileOptions{Placeholders: map[string][]string{"Dir": {"/opt/app", "/srv"}, "Admins": {"root", "adm_*"}}})
}
