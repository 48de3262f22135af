package storetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
)

// TestEventStoreHostile checks what happens to an engine's files under
// attack or failure: a corrupt database file and a full disk.
func TestEventStoreHostile(t *testing.T, open func(dir string) (store.EventStore, error)) {
	ctx := context.Background()

	t.Run("CorruptFile", func(t *testing.T) {
		dir := t.TempDir()
		s, err := open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctx, "a", Fixture()); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		files, _ := os.ReadDir(dir)
		var main string
		for _, f := range files {
			// The main database file is the one without a -wal/-shm/.wal suffix.
			n := f.Name()
			if !f.IsDir() && !strings.HasSuffix(n, "-wal") && !strings.HasSuffix(n, "-shm") && !strings.HasSuffix(n, ".wal") {
				main = filepath.Join(dir, n)
			}
		}
		if main == "" {
			t.Fatalf("no database file in %s: %v", dir, files)
		}
		garbage := []byte(strings.Repeat("this is not a database; ", 4096))
		if err := os.WriteFile(main, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err = open(dir)
		if err == nil {
			s.Close()
			t.Fatal("opening a corrupt file succeeded")
		}
		if !strings.Contains(err.Error(), main) {
			t.Errorf("error does not name the file %s: %v", main, err)
		}
		t.Logf("corrupt file: %v", err)
		// The file is left as it was, for the operator to inspect or restore.
		if b, _ := os.ReadFile(main); string(b) != string(garbage) {
			t.Fatal("open rewrote the corrupt file")
		}
	})

	t.Run("DiskFull", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to mount a small tmpfs")
		}
		dir := t.TempDir()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=6m,mode=0700"); err != nil {
			if errors.Is(err, unix.EPERM) {
				t.Skipf("mount tmpfs: %v (no CAP_SYS_ADMIN)", err)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		filler := filepath.Join(dir, "filler")
		if err := os.WriteFile(filler, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.Close() }()
		acked := 0
		var appendErr error
		for b := 0; b < 1000 && appendErr == nil; b++ {
			var evs []schema.Event
			for i := 1; i <= 200; i++ {
				seq := uint64(b*200 + i)
				evs = append(evs, Proc("h1", seq, schema.ProcessExec, uint32(seq), 1, "/usr/bin/python3", "python3", strings.Repeat("x", 300), fmt.Sprint(seq)))
			}
			if appendErr = s.Append(ctx, "a", evs); appendErr == nil {
				acked += len(evs)
			}
		}
		if appendErr == nil {
			t.Fatal("never ran out of space")
		}
		t.Logf("disk full after %d events: %v", acked, appendErr)
		if acked == 0 {
			t.Fatal("nothing fit before the disk filled; the test proves nothing")
		}
		check := func(s store.EventStore, when string) {
			t.Helper()
			n, err := s.Count(ctx, "a")
			if err != nil {
				t.Fatalf("%s: count: %v", when, err)
			}
			if n != int64(acked) {
				t.Fatalf("%s: %d events stored, %d acknowledged", when, n, acked)
			}
			if m, err := s.MaxSeq(ctx, "a", "h1"); err != nil || m != uint64(acked) {
				t.Fatalf("%s: max seq %d, %v; want %d", when, m, err, acked)
			}
		}
		check(s, "after the failed append")
		// Space comes back: the store works again without a restart.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		extra := Proc("h1", uint64(acked+1), schema.ProcessExec, 1, 1, "/bin/true")
		if err := s.Append(ctx, "a", []schema.Event{extra}); err != nil {
			// An engine may need a reopen after an I/O error; that is
			// allowed as long as nothing acknowledged is lost.
			t.Logf("append after space came back: %v; reopening", err)
			s.Close()
			if s, err = open(dir); err != nil {
				t.Fatalf("reopen after disk full: %v", err)
			}
			check(s, "after reopen")
			if err := s.Append(ctx, "a", []schema.Event{extra}); err != nil {
				t.Fatalf("append after reopen: %v", err)
			}
		}
		acked++
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if s, err = open(dir); err != nil {
			t.Fatal(err)
		}
		check(s, "after close and reopen")
	})
}
