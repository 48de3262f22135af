package sigma

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sharedSigma = "../../../../shared/testdata/sigma"

func sharedDir(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(sharedSigma); err != nil {
		t.Skipf("SigmaHQ test data absent at %s: %v", sharedSigma, err)
	}
	return sharedSigma
}

// TestSigmaHQLoadReport asserts that the whole shared SigmaHQ Linux set and
// the specification examples parse, and that every detection compiles with a
// permissive mapping, so any regression shows as a count change.
func TestSigmaHQLoadReport(t *testing.T) {
	dir := sharedDir(t)
	rules, errs := LoadDir(dir)
	for _, e := range errs {
		t.Errorf("load: %v", e)
	}
	rep := Report(rules, errs, CompileOptions{Placeholders: map[string][]string{}})
	t.Logf("\n%s", rep)
	for _, r := range rep.Reasons {
		t.Errorf("not evaluable: %s", r)
	}
	files := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yml") || strings.HasSuffix(p, ".yaml")) {
			files++
		}
		return nil
	})
	if rep.Parsed != files {
		t.Errorf("parsed %d rules from %d files, want every file", rep.Parsed, files)
	}
	if rep.Compiled != rep.Detections {
		t.Errorf("compiled %d of %d detections", rep.Compiled, rep.Detections)
	}
	if rep.Correlation != 8 || rep.Filters != 2 {
		t.Errorf("correlations %d filters %d, want the spec examples' 8 and 2", rep.Correlation, rep.Filters)
	}
}

// TestUnmappedFieldReported checks a mapping that lacks a field makes Compile fail naming it.
func TestUnmappedFieldReported(t *testing.T) {
	r := mustParse(t, `title: t
logsource: {category: process_creation, product: linux}
detection:
  sel:
    Image|endswith: /bash
    Weird: x
  condition: sel
`)
	known := map[string]string{"Image": "process.exe"}
	_, err := Compile(r, CompileOptions{FieldMap: func(_ LogSource, f string) (string, error) {
		if m, ok := known[f]; ok {
			return m, nil
		}
		return "", ErrUnmappedField
	}})
	if err == nil || !strings.Contains(err.Error(), `"Weird"`) {
		t.Fatalf("err = %v, want unmapped Weird", err)
	}
	var u *UnmappedFieldError
	if !errorsAs(err, &u) || u.Field != "Weird" {
		t.Fatalf("err %v is not an UnmappedFieldError for Weird", err)
	}
}
