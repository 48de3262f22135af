package sigma

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the expected output of testdata/golden cases")

const wantMarker = "# --- want ---\n"

type goldenCase struct {
	Rule         string              `yaml:"rule"`
	Filters      []string            `yaml:"filters"`
	Placeholders map[string][]string `yaml:"placeholders"`
	Events       []struct {
		Fields   map[string]any `yaml:"fields"`
		Keywords []string       `yaml:"keywords"`
	} `yaml:"events"`
}

func normalizeYAML(v any) any {
	switch x := v.(type) {
	case int:
		return int64(x)
	case []any:
		for i := range x {
			x[i] = normalizeYAML(x[i])
		}
	}
	return v
}

// TestGolden runs each testdata/golden/*.yml case: a rule, events, and the
// expected verdict per event after the want marker (-update rewrites it).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, _ := strings.Cut(string(raw), wantMarker)
			got := runGolden(t, input)
			if *update {
				if err := os.WriteFile(file, []byte(input+wantMarker+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Fatalf("got:\n%swant:\n%s", got, want)
			}
		})
	}
}

func runGolden(t *testing.T, input string) string {
	var gc goldenCase
	if err := yaml.Unmarshal([]byte(input), &gc); err != nil {
		t.Fatalf("case: %v", err)
	}
	r, err := ParseRule([]byte(gc.Rule))
	if err != nil {
		return fmt.Sprintf("parse error: %v\n", err)
	}
	opts := CompileOptions{Placeholders: gc.Placeholders}
	for _, f := range gc.Filters {
		fr, err := ParseRule([]byte(f))
		if err != nil {
			return fmt.Sprintf("filter parse error: %v\n", err)
		}
		opts.Filters = append(opts.Filters, fr)
	}
	m, err := Compile(r, opts)
	if err != nil {
		return fmt.Sprintf("compile error: %v\n", err)
	}
	var b strings.Builder
	for i, e := range gc.Events {
		for k, v := range e.Fields {
			e.Fields[k] = normalizeYAML(v)
		}
		verdict := "no match"
		if m.Match(MapEvent{Fields: e.Fields, Text: e.Keywords}) {
			verdict = "match"
		}
		fmt.Fprintf(&b, "event %d: %s\n", i, verdict)
	}
	return b.String()
}
