package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"version", []string{"version"}, 0, "mamori-agent ", ""},
		{"status without agent", []string{"status", "--data", dir}, 3, "", "agent not running"},
		{"status json without agent", []string{"status", "--data", dir, "--json"}, 3, "", "agent not running"},
		{"not enrolled", []string{"--data", dir}, 1, "", "not enrolled"},
		{"bad token", []string{"--data", dir, "--server", "https://127.0.0.1:1", "--enroll-token", "nope"}, 1, "", "malformed enrollment token"},
		{"bad log format", []string{"--data", dir, "--log-format", "xml"}, 2, "", "--log-format"},
		{"unknown flag", []string{"--bogus"}, 2, "", "flag provided but not defined"},
		{"stray argument", []string{"--data", dir, "extra"}, 2, "", "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MAMORI_SERVER", "")
			t.Setenv("MAMORI_ENROLL_TOKEN", "")
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("code %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", code, tc.code, out.String(), tc.stdout, errb.String(), tc.stderr)
			}
		})
	}
}

// Flags fall back to the environment.
func TestEnvFlags(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MAMORI_DATA", dir)
	t.Setenv("MAMORI_SERVER", "https://127.0.0.1:1")
	t.Setenv("MAMORI_ENROLL_TOKEN", "mmr1.bad")
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "malformed enrollment token") {
		t.Fatalf("code %d stderr %q", code, errb.String())
	}
	if code := run([]string{"status"}, &out, &errb); code != 3 || !strings.Contains(errb.String(), dir) {
		t.Fatalf("status: code %d stderr %q", code, errb.String())
	}
}
