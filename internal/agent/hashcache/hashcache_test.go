package hashcache

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
)

// sumOf runs the system's sha256sum and md5sum, an implementation
// independent of ours.
func sumOf(t *testing.T, path string) (sha, md string) {
	t.Helper()
	for _, tool := range []string{"sha256sum", "md5sum"} {
		out, err := exec.Command(tool, path).Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		f := strings.Fields(string(out))[0]
		if tool == "sha256sum" {
			sha = f
		} else {
			md = f
		}
	}
	return sha, md
}

func writeFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustKey(t *testing.T, p string) Key {
	t.Helper()
	k, err := StatKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHashStatuses(t *testing.T) {
	dir := t.TempDir()
	small := writeFile(t, dir, "small", 100_000)
	smallSHA, smallMD5 := sumOf(t, small)
	big := writeFile(t, dir, "big", 3<<20)
	replaced := writeFile(t, dir, "replaced", 1000)
	replacedKey := mustKey(t, replaced)
	// Replace the file at the path: same name, new inode and content.
	writeFile(t, dir, "replaced.new", 1000)
	if err := os.Rename(filepath.Join(dir, "replaced.new"), replaced); err != nil {
		t.Fatal(err)
	}
	rewritten := writeFile(t, dir, "rewritten", 1000)
	rewrittenKey := mustKey(t, rewritten)
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(rewritten, bytes.Repeat([]byte{1}, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifoKey := mustKey(t, filepath.Join(dir, "fifo"))
	dirKey := mustKey(t, dir)

	c := New(Options{MaxSize: 1 << 20})
	defer c.Close()

	tests := []struct {
		name   string
		pid    uint32
		path   string
		key    Key
		status string
		sha    string
		md5    string
	}{
		{"ok", 0, small, mustKey(t, small), StatusOK, smallSHA, smallMD5},
		{"too large", 0, big, mustKey(t, big), StatusTooLarge, "", ""},
		{"replaced at path", 0, replaced, replacedKey, StatusGone, "", ""},
		{"rewritten in place", 0, rewritten, rewrittenKey, StatusGone, "", ""},
		{"missing", 0, filepath.Join(dir, "nope"), Key{Ino: 1}, StatusGone, "", ""},
		{"dead pid no path", 1 << 30, "", Key{Ino: 1}, StatusGone, "", ""},
		{"fifo does not block", 0, filepath.Join(dir, "fifo"), fifoKey, StatusGone, "", ""},
		{"directory", 0, dir, dirKey, StatusGone, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Hash(tt.pid, tt.path, tt.key, 5*time.Second, nil)
			if got.Status != tt.status || got.SHA256 != tt.sha || got.MD5 != tt.md5 {
				t.Fatalf("got %+v, want status %s sha %s md5 %s", got, tt.status, tt.sha, tt.md5)
			}
		})
	}
	st := c.Stats()
	if st["hashed_bytes"] != 100_000 {
		t.Errorf("hashed_bytes = %d, want only the small file read (100000)", st["hashed_bytes"])
	}
	if st["too_large"] != 1 {
		t.Errorf("too_large = %d, want 1", st["too_large"])
	}
}

func TestHashHitDoesNotReread(t *testing.T) {
	p := writeFile(t, t.TempDir(), "f", 50_000)
	k := mustKey(t, p)
	c := New(Options{})
	defer c.Close()
	first := c.Hash(0, p, k, 5*time.Second, nil)
	if first.Status != StatusOK {
		t.Fatalf("first: %+v", first)
	}
	// Remove the file: a hit must not even open it.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	second := c.Hash(0, p, k, 0, nil)
	if second != first {
		t.Fatalf("second %+v != first %+v", second, first)
	}
	st := c.Stats()
	if st["hits"] != 1 || st["misses"] != 1 || st["hashed_bytes"] != 50_000 {
		t.Fatalf("stats %v: want hits 1, misses 1, hashed_bytes 50000", st)
	}
}

// TestHashExecutedInode runs a copied binary, deletes it and puts another
// file at its path: the hash must be that of what the process runs.
func TestHashExecutedInode(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "sleepy")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	wantSHA, wantMD5 := sumOf(t, exe)
	key := mustKey(t, exe)
	cmd := exec.Command(exe, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho impostor\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := New(Options{})
	defer c.Close()
	got := c.Hash(uint32(cmd.Process.Pid), exe, key, 5*time.Second, nil)
	if got.Status != StatusOK || got.SHA256 != wantSHA || got.MD5 != wantMD5 || got.Size != int64(len(data)) {
		t.Fatalf("got %+v, want ok %s %s", got, wantSHA, wantMD5)
	}
}

func TestHashPendingLateAndShared(t *testing.T) {
	p := writeFile(t, t.TempDir(), "big", 48<<20)
	k := mustKey(t, p)
	wantSHA, wantMD5 := sumOf(t, p)
	c := New(Options{})
	defer c.Close()

	const n = 8
	var wg sync.WaitGroup
	lateCh := make(chan schema.FileHash, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			got := c.Hash(0, p, k, time.Millisecond, func(h schema.FileHash) { lateCh <- h })
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("Hash blocked %v with wait 1ms", d)
			}
			if got.Status != StatusPending {
				t.Errorf("status %q, want pending", got.Status)
			}
		}()
	}
	wg.Wait()
	for range n {
		select {
		case h := <-lateCh:
			if h.Status != StatusOK || h.SHA256 != wantSHA || h.MD5 != wantMD5 {
				t.Fatalf("late %+v, want ok %s %s", h, wantSHA, wantMD5)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("late hash never delivered")
		}
	}
	st := c.Stats()
	if st["hashed_bytes"] != 48<<20 || st["misses"] != 1 || st["shared"] != n-1 || st["pending"] != n {
		t.Fatalf("stats %v: want one read of the file shared by %d callers", st, n)
	}
	if got := c.Hash(0, p, k, 0, nil); got.Status != StatusOK || got.SHA256 != wantSHA {
		t.Fatalf("after late: %+v", got)
	}
}

func TestHashBusyWhenQueueFull(t *testing.T) {
	dir := t.TempDir()
	c := New(Options{Workers: 1, MaxQueue: 1})
	defer c.Close()
	a := writeFile(t, dir, "a", 32<<20)
	c.Hash(0, a, mustKey(t, a), 0, nil)
	// Wait until the single worker has taken a, so the queue is empty.
	for deadline := time.Now().Add(5 * time.Second); len(c.queue) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("worker never picked up the job")
		}
		time.Sleep(time.Millisecond)
	}
	b := writeFile(t, dir, "b", 10)
	d := writeFile(t, dir, "d", 10)
	if got := c.Hash(0, b, mustKey(t, b), 0, nil); got.Status != StatusPending {
		t.Fatalf("b: %+v, want pending", got)
	}
	if got := c.Hash(0, d, mustKey(t, d), 0, nil); got.Status != StatusBusy {
		t.Fatalf("d: %+v, want busy", got)
	}
}

func TestCloseDeliversError(t *testing.T) {
	dir := t.TempDir()
	c := New(Options{Workers: 1})
	a := writeFile(t, dir, "a", 64<<20)
	b := writeFile(t, dir, "b", 10)
	got := make(chan schema.FileHash, 2)
	late := func(h schema.FileHash) { got <- h }
	c.Hash(0, a, mustKey(t, a), 0, late)
	c.Hash(0, b, mustKey(t, b), 0, late)
	c.Close()
	c.Close()
	seen := 0
	for seen < 2 {
		select {
		case <-got:
			seen++
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 2 late callbacks after Close", seen)
		}
	}
	if h := c.Hash(0, b, mustKey(t, b), time.Second, nil); h.Status != StatusError {
		t.Fatalf("Hash after Close: %+v, want error", h)
	}
}

func TestLRUBound(t *testing.T) {
	dir := t.TempDir()
	c := New(Options{Entries: 3})
	defer c.Close()
	for i := range 10 {
		p := writeFile(t, dir, string(rune('a'+i)), 10)
		if h := c.Hash(0, p, mustKey(t, p), 5*time.Second, nil); h.Status != StatusOK {
			t.Fatalf("%d: %+v", i, h)
		}
	}
	if n := c.Stats()["entries"]; n != 3 {
		t.Fatalf("entries %d, want 3", n)
	}
}

func BenchmarkHashHit(b *testing.B) {
	p := filepath.Join(b.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	k, _ := StatKey(p)
	c := New(Options{})
	defer c.Close()
	c.Hash(0, p, k, time.Second, nil)
	b.ReportAllocs()
	for b.Loop() {
		c.Hash(0, p, k, time.Second, nil)
	}
}

func BenchmarkHashMiss(b *testing.B) {
	data, err := os.ReadFile("/bin/ls")
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "ls")
	os.WriteFile(p, data, 0o755)
	k, _ := StatKey(p)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := New(Options{Workers: 1})
		c.Hash(0, p, k, time.Minute, nil)
		c.Close()
	}
}
