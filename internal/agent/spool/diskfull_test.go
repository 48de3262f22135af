package spool

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// smallDisk mounts a 1 MiB tmpfs for the test and unmounts it afterwards.
func smallDisk(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestDiskFull(t *testing.T) {
	for _, batch := range []int{1, 9} {
		t.Run(map[int]string{1: "single", 9: "batches"}[batch], func(t *testing.T) {
			dir := filepath.Join(smallDisk(t), "spool")
			// The budget is larger than the disk, so the disk fills first.
			o := Options{SegmentBytes: 64 << 10, MaxBytes: 64 << 20}
			s := mustOpen(t, dir, o)
			defer func() { s.Close() }()

			var stored uint64
			var appendErr error
			for i := 0; appendErr == nil && i < 100000; {
				b := make([][]byte, batch)
				for k := range b {
					b[k] = fixed(i + k + 1)
				}
				var last uint64
				last, appendErr = s.Append(b...)
				if last != 0 {
					stored = last
				}
				i = int(stored)
			}
			if !errors.Is(appendErr, syscall.ENOSPC) {
				t.Fatalf("append on a full disk: %v, want ENOSPC", appendErr)
			}
			t.Logf("disk full after %d records: %v", stored, appendErr)
			if stored < 1000 {
				t.Fatalf("only %d records fit in 1 MiB", stored)
			}
			if st := s.Stats(); st.LastSeq != stored {
				t.Fatalf("stats %+v, last stored %d", st, stored)
			}
			// A smaller append may still fit the last page; once single
			// records fail too, they keep failing cleanly.
			var err error
			for range 50 {
				var last uint64
				if last, err = s.Append(fixed(int(stored) + 1)); err != nil {
					break
				}
				stored = last
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("single appends on a full disk: %v", err)
			}
			if _, err := s.Append(fixed(int(stored) + 1)); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("retry: %v", err)
			}
			// Everything stored is readable.
			recs := readAll(t, s, 0)
			if got := seqs(recs); !slices.Equal(got, seqRange(1, stored)) {
				t.Fatalf("read %d records, want 1..%d", len(got), stored)
			}
			checkPayloads(t, recs, fixed)

			// The server acks half: segments go, and appends work again.
			if err := s.Ack(stored / 2); err != nil {
				t.Fatalf("ack on a full disk: %v", err)
			}
			appendN(t, s, int(stored)+1, 100, fixed)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = mustOpen(t, dir, o)
			recs = readAll(t, s, s.Acked())
			if got := seqs(recs); !slices.Equal(got, seqRange(stored/2+1, stored+100)) {
				t.Fatalf("after reopen read %d records", len(got))
			}
			checkPayloads(t, recs, fixed)
			if l := s.Loss(); l.SpoolCorrupt != 0 || l.SpoolDropped != 0 {
				t.Fatalf("loss %+v", l)
			}
		})
	}
}
