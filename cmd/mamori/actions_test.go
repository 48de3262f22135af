package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestActionUsage: the response verbs refuse bad command lines before
// contacting any server (exit 2 with a clear message).
func TestActionUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"isolate"}, "mamori isolate HOST"},
		{[]string{"isolate", "h1"}, "--reason is required"},
		{[]string{"release", "h1", "h2", "--reason", "x"}, "mamori release HOST"},
		{[]string{"kill", "h1", "--reason", "x"}, "mamori kill HOST ENTITY_ID"},
		{[]string{"kill", "h1", "b:1:2", "--reason", " "}, "--reason is required"},
		{[]string{"kill", "h1", "b:1:2", "--reason", "x", "--ttl", "0s"}, "--ttl"},
		{[]string{"isolate", "h1", "--tree", "--reason", "x"}, "flag provided but not defined: -tree"},
		{[]string{"actions", "h1", "h2"}, "mamori actions [HOST]"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
