package sigma

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseRule: arbitrary YAML never panics, and a parsed detection compiles or errors cleanly.
func FuzzParseRule(f *testing.F) {
	var seeds []string
	for _, g := range []string{"/rules/linux/*/*.yml", "/spec/examples/*/*.yml"} {
		m, _ := filepath.Glob(sharedSigma + g)
		seeds = append(seeds, m...)
	}
	if len(seeds) > 60 {
		seeds = seeds[:60]
	}
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("title: t\nlogsource: {}\ndetection: {s: {a|re|i: '(x'}, condition: s}"))
	f.Add([]byte("action: global\ntitle: t\n---\nlogsource: {}\ndetection: {s: [x], condition: s}"))
	f.Add([]byte("title: c\ncorrelation: {type: temporal, rules: [a, b], group-by: [x], timespan: 5m}"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := ParseRules(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, r := range rules {
			if r.Correlation != nil {
				NewCorrelator([]*Rule{r}, CorrelatorOptions{})
				continue
			}
			if r.Filter != nil {
				continue
			}
			m, err := Compile(r, CompileOptions{Placeholders: map[string][]string{"x": {"y"}}})
			if err == nil {
				m.Match(MapEvent{Fields: map[string]any{"a": "x", "b": int64(1)}, Text: []string{"x"}})
			}
		}
	})
}

// FuzzCondition: condition strings never panic and parse deterministically.
func FuzzCondition(f *testing.F) {
	for _, s := range []string{"a and not b", "1 of sel* or (x and y)", "all of them", "not not a", "((a)", "a | count() > 1", "2 of b*", "a or"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCondition(s)
		if err != nil {
			return
		}
		// The printed form must parse to the same tree.
		n2, err := parseCondition(n.String())
		if err != nil {
			t.Fatalf("reparse of %q (%q): %v", s, n.String(), err)
		}
		if n.String() != n2.String() {
			t.Fatalf("round trip %q -> %q -> %q", s, n.String(), n2.String())
		}
	})
}

// naiveMatch is the reference wildcard matcher: plain recursive backtracking
// ('*' spans any bytes, '?' one UTF-8 character or one invalid byte).
func naiveMatch(p sstr, s string) bool {
	if len(p) == 0 {
		return len(s) == 0
	}
	switch p[0].wc {
	case '*':
		for i := 0; i <= len(s); i++ {
			if naiveMatch(p[1:], s[i:]) {
				return true
			}
		}
		return false
	case '?':
		if len(s) == 0 {
			return false
		}
		_, w := utf8.DecodeRuneInString(s)
		return naiveMatch(p[1:], s[w:])
	}
	return strings.HasPrefix(s, p[0].lit) && naiveMatch(p[1:], s[len(p[0].lit):])
}

// FuzzWildcard: the compiled pattern agrees with the naive reference.
func FuzzWildcard(f *testing.F) {
	for _, s := range [][2]string{{"*foo*", "xfoox"}, {"foo*", "foobar"}, {"*bar", "foobar"}, {`a\*b`, "a*b"}, {"a?c", "abc"}, {"*a*b*c", "aXbYc"}, {`C:\\*`, `C:\x`}, {"*", ""}, {"Ab*Cd", "abXcd"}} {
		f.Add(s[0], s[1], false)
		f.Add(s[0], s[1], true)
	}
	f.Fuzz(func(t *testing.T, pat, in string, cased bool) {
		if len(pat) > 64 || len(in) > 256 {
			return
		}
		ps := parseSigmaString(pat)
		p := compilePattern(ps, !cased)
		subject := in
		ref := ps.normalize()
		if !cased {
			subject = strings.ToLower(in)
			ref = ref.mapLiterals(strings.ToLower)
		}
		want := naiveMatch(ref, subject)
		if got := p.match(subject); got != want {
			t.Fatalf("pattern %q cased=%v on %q: got %v, reference %v (kind %d)", pat, cased, in, got, want, p.kind)
		}
	})
}
