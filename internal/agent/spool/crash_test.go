package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashDirEnv = "MAMORI_SPOOL_CRASH_DIR"

var crashOpts = Options{SegmentBytes: 32 << 10, MaxBytes: 1 << 30, SyncInterval: 20 * time.Millisecond}

func crashPayload(g, i int) []byte {
	return fmt.Appendf(nil, `{"g":%d,"i":%d,"pad":"%s"}`, g, i, bytes.Repeat([]byte("k"), (g*7+i)%300))
}

// crashWriter runs in the child: it appends from several goroutines and
// prints "lastSeq g i count" after each Append returns, until killed.
func crashWriter(dir string) {
	s, err := Open(dir, crashOpts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; {
				n := 1 + i%3
				batch := make([][]byte, n)
				for k := range batch {
					batch[k] = crashPayload(g, i+k)
				}
				last, err := s.Append(batch...)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(4)
				}
				out.Lock()
				fmt.Printf("%d %d %d %d\n", last, g, i, n)
				out.Unlock()
				i += n
			}
		})
	}
	wg.Wait()
}

// TestKill9MidAppend re-executes the test binary as a writer, kills it with
// SIGKILL mid-stream, and checks that every record the writer was told was
// appended is readable after reopening, in several rounds on one spool.
func TestKill9MidAppend(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashWriter(dir)
		return
	}
	if testing.Short() {
		t.Skip("subprocess crash test skipped in -short mode")
	}
	dir := t.TempDir()
	var maxSeen uint64
	total := 0
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9MidAppend$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		type rep struct{ g, i int }
		reported := map[uint64]rep{}
		sc := bufio.NewScanner(stdout)
		killed := false
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		for sc.Scan() {
			var last uint64
			var g, i, n int
			if _, err := fmt.Sscanf(sc.Text(), "%d %d %d %d", &last, &g, &i, &n); err != nil {
				continue // test framework chatter
			}
			for k := range n {
				reported[last-uint64(n-1-k)] = rep{g, i + k}
			}
			// Kill while all four writers are busy, at a varying point.
			if !killed && len(reported) >= 3000+round*1111 {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		timer.Stop()
		err = cmd.Wait()
		var ee *exec.ExitError
		if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: writer ended with %v (killed=%v), stderr %s", round, err, killed, stderr.String())
		}

		s := mustOpen(t, dir, crashOpts)
		recs := readAll(t, s, 0)
		got := map[uint64][]byte{}
		for _, r := range recs {
			got[r.Seq] = r.Event
		}
		for seq, r := range reported {
			if seq <= maxSeen {
				t.Fatalf("round %d: seq %d reused (previous rounds reached %d)", round, seq, maxSeen)
			}
			p, ok := got[seq]
			if !ok {
				t.Fatalf("round %d: seq %d reported appended but not readable (%d of %d readable)", round, seq, len(got), len(reported))
			}
			if want := crashPayload(r.g, r.i); !bytes.Equal(p, want) {
				t.Fatalf("round %d: seq %d holds %q, want %q", round, seq, p, want)
			}
		}
		if l := s.Loss(); l.SpoolCorrupt != 0 || l.SpoolDropped != 0 {
			t.Fatalf("round %d: loss after kill -9: %+v", round, l)
		}
		for seq := range reported {
			maxSeen = max(maxSeen, seq)
		}
		total += len(reported)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		t.Logf("round %d: %d reported, %d readable in %d segments", round, len(reported), len(recs), len(segs))
	}
	if total == 0 {
		t.Fatal("writer reported nothing")
	}
}
