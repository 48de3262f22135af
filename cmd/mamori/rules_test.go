package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	good := "title: curl to tmp\nlogsource: {category: process_creation, product: linux}\ndetection:\n  sel: {CommandLine|contains: /tmp/}\n  condition: sel\n"
	files := map[string]string{
		"good.yml":     good,
		"unmapped.yml": "title: file\nlogsource: {category: file_event, product: linux}\ndetection:\n  sel: {TargetFilename: /etc/x}\n  condition: sel\n",
		"broken.yml":   "title: broken\nlogsource: {category: process_creation}\ndetection:\n  sel: {Image: x}\n  condition: sel and nope\n",
		"bad-yaml.yml": "title: [unclosed\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"rules", "check", dir, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep rulesCheckReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Evaluable != 1 || rep.Failed+rep.Parsed != 4 || len(rep.Reasons) != 3 {
		t.Fatalf("report %+v", rep)
	}
	joined := strings.Join(rep.Reasons, "\n")
	for _, want := range []string{"unmapped.yml", "file events are not recorded", "broken.yml", "nope", "bad-yaml.yml:1"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reasons lack %q:\n%s", want, joined)
		}
	}

	out.Reset()
	if code := run([]string{"rules", "check", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "evaluable 1") {
		t.Errorf("text report (exit %d):\n%s", code, out.String())
	}
	if code := run([]string{"rules", "check"}, &out, &errb); code != 2 {
		t.Errorf("no directory: exit %d, want 2", code)
	}
	if code := run([]string{"rules", "check", filepath.Join(dir, "absent")}, &out, &errb); code != 1 {
		t.Errorf("missing directory: exit %d, want 1", code)
	}
}
