package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/wire"
)

// payload returns a deterministic JSON payload for record i.
func payload(i int) []byte {
	return fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", i%37))
}

// fixed returns a payload of exactly 50 bytes, so offsets are predictable.
func fixed(i int) []byte {
	b := fmt.Appendf(nil, `{"n":%d,"p":"`, i)
	b = append(b, strings.Repeat("y", 50-len(b)-2)...)
	return append(b, `"}`...)
}

func mustOpen(t testing.TB, dir string, o Options) *Spool {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func readAll(t testing.TB, s *Spool, after uint64) []wire.Record {
	t.Helper()
	var all []wire.Record
	for {
		recs, err := s.Read(after, 7, 0)
		if err != nil {
			t.Fatalf("Read(%d): %v", after, err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		after = recs[len(recs)-1].Seq
	}
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func appendN(t testing.TB, s *Spool, from, n int, gen func(int) []byte) {
	t.Helper()
	for i := from; i < from+n; i++ {
		seq, err := s.Append(gen(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if seq != uint64(i) {
			t.Fatalf("Append %d got seq %d", i, seq)
		}
	}
}

func seqs(recs []wire.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func seqRange(lo, hi uint64, except ...uint64) []uint64 {
	var out []uint64
	for i := lo; i <= hi; i++ {
		if !slices.Contains(except, i) {
			out = append(out, i)
		}
	}
	return out
}

func checkPayloads(t *testing.T, recs []wire.Record, gen func(int) []byte) {
	t.Helper()
	for _, r := range recs {
		if want := gen(int(r.Seq)); !bytes.Equal(r.Event, want) {
			t.Fatalf("seq %d payload %q, want %q", r.Seq, r.Event, want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 20, SyncInterval: 10 * time.Millisecond})
	defer s.Close()

	select {
	case <-s.Notify():
		t.Fatal("notify before any append")
	default:
	}
	// Batches of varying size: seqs must be consecutive from 1.
	next := 1
	for _, n := range []int{1, 5, 17, 100, 3, 250} {
		batch := make([][]byte, n)
		for i := range batch {
			batch[i] = payload(next + i)
		}
		last, err := s.Append(batch...)
		if err != nil {
			t.Fatal(err)
		}
		next += n
		if last != uint64(next-1) {
			t.Fatalf("batch of %d: last seq %d, want %d", n, last, next-1)
		}
	}
	select {
	case <-s.Notify():
	default:
		t.Fatal("no notification after Append")
	}
	total := uint64(next - 1)
	all := readAll(t, s, 0)
	if got := seqs(all); !slices.Equal(got, seqRange(1, total)) {
		t.Fatalf("read seqs %v", got)
	}
	checkPayloads(t, all, payload)

	tests := []struct {
		name              string
		after             uint64
		maxRecords, maxBy int
		want              []uint64
	}{
		{"records limit", 10, 3, 0, []uint64{11, 12, 13}},
		{"bytes limit", 0, 0, len(payload(1)) + len(payload(2)), []uint64{1, 2}},
		{"first record even if over bytes", 4, 0, 1, []uint64{5}},
		{"past the end", total, 10, 0, nil},
		{"last one", total - 1, 10, 0, []uint64{total}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := s.Read(tc.after, tc.maxRecords, tc.maxBy)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(recs); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}

	if err := s.Ack(200); err != nil {
		t.Fatal(err)
	}
	if s.Acked() != 200 {
		t.Fatalf("Acked %d", s.Acked())
	}
	if got := seqs(readAll(t, s, s.Acked())); !slices.Equal(got, seqRange(201, total)) {
		t.Fatalf("after ack read %v", got)
	}
	st := s.Stats()
	if st.LastSeq != total || st.AckedSeq != 200 || st.Pending != total-200 || st.Segments == 0 || st.Bytes <= 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRestartKeepsUnackedAndSeq(t *testing.T) {
	for _, sync := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("sync=", sync), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SegmentBytes: 1024, MaxBytes: 1 << 20, SyncInterval: sync}
			s := mustOpen(t, dir, o)
			appendN(t, s, 1, 100, payload)
			if err := s.Ack(40); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = mustOpen(t, dir, o)
			if s.Acked() != 40 {
				t.Fatalf("acked after restart %d", s.Acked())
			}
			recs := readAll(t, s, s.Acked())
			if got := seqs(recs); !slices.Equal(got, seqRange(41, 100)) {
				t.Fatalf("after restart %v", got)
			}
			checkPayloads(t, recs, payload)
			appendN(t, s, 101, 1, payload)
			// Ack everything: every segment goes, but the counter must not.
			if err := s.Ack(101); err != nil {
				t.Fatal(err)
			}
			if n := len(segFiles(t, dir)); n != 0 {
				t.Fatalf("%d segments left after acking all", n)
			}
			s.Close()

			s = mustOpen(t, dir, o)
			defer s.Close()
			appendN(t, s, 102, 3, payload)
			if got := seqs(readAll(t, s, 0)); !slices.Equal(got, []uint64{102, 103, 104}) {
				t.Fatalf("after full ack and restart %v", got)
			}
			if l := s.Loss(); l.SpoolCorrupt != 0 || l.SpoolDropped != 0 {
				t.Fatalf("loss %+v", l)
			}
		})
	}
}

func TestAckDeletesSegments(t *testing.T) {
	dir := t.TempDir()
	// 10 records of 66 bytes per segment.
	o := Options{SegmentBytes: segHeaderSize + 10*(recHeaderSize+50), MaxBytes: 1 << 20}
	s := mustOpen(t, dir, o)
	defer s.Close()
	appendN(t, s, 1, 45, fixed)
	if n := len(segFiles(t, dir)); n != 5 {
		t.Fatalf("%d segments, want 5", n)
	}
	tests := []struct {
		ack  uint64
		segs int
	}{
		{5, 5},  // first segment still holds 6..10
		{10, 4}, // first segment fully acked
		{29, 3},
		{30, 2},
		{44, 1},
		{45, 0}, // the active one goes too
	}
	for _, tc := range tests {
		if err := s.Ack(tc.ack); err != nil {
			t.Fatal(err)
		}
		if n := len(segFiles(t, dir)); n != tc.segs || s.Stats().Segments != tc.segs {
			t.Fatalf("ack %d: %d files, stats %d, want %d", tc.ack, n, s.Stats().Segments, tc.segs)
		}
		if got := readAll(t, s, tc.ack); len(got) != 45-int(tc.ack) {
			t.Fatalf("ack %d: %d readable", tc.ack, len(got))
		}
	}
	if s.Stats().Bytes != 0 {
		t.Fatalf("bytes %d after acking all", s.Stats().Bytes)
	}
	appendN(t, s, 46, 1, fixed)
	if got := seqs(readAll(t, s, 0)); !slices.Equal(got, []uint64{46}) {
		t.Fatalf("after re-append %v", got)
	}
}

func TestOverflowDropsOldest(t *testing.T) {
	dir := t.TempDir()
	segBytes := int64(segHeaderSize + 10*(recHeaderSize+50))
	o := Options{SegmentBytes: segBytes, MaxBytes: 4 * segBytes}
	s := mustOpen(t, dir, o)
	appendN(t, s, 1, 15, fixed)
	if err := s.Ack(3); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 16, 85, fixed) // 100 records = 10 segments, 4 fit

	recs := readAll(t, s, s.Acked())
	first := recs[0].Seq
	if got := seqs(recs); !slices.Equal(got, seqRange(first, 100)) {
		t.Fatalf("readable %v", got)
	}
	checkPayloads(t, recs, fixed)
	wantLoss := first - 1 - 3 // 1..3 were acked: not lost
	l := s.Loss()
	if l.SpoolDropped != wantLoss || l.DroppedSeqFirst != 4 || l.DroppedSeqLast != first-1 || l.SpoolCorrupt != 0 {
		t.Fatalf("loss %+v, want %d dropped in 4..%d", l, wantLoss, first-1)
	}
	var disk int64
	for _, f := range segFiles(t, dir) {
		fi, _ := os.Stat(f)
		disk += fi.Size()
	}
	if st := s.Stats(); disk > o.MaxBytes || st.Bytes != disk || st.Dropped != wantLoss || st.Pending != 100-first+1 {
		t.Fatalf("disk %d, stats %+v", disk, st)
	}
	s.Close()

	// The loss is persisted and not counted again.
	s = mustOpen(t, dir, o)
	defer s.Close()
	if l2 := s.Loss(); !reflect.DeepEqual(l2, l) {
		t.Fatalf("loss after restart %+v, want %+v", l2, l)
	}
	if got := seqs(readAll(t, s, s.Acked())); !slices.Equal(got, seqRange(first, 100)) {
		t.Fatalf("readable after restart %v", got)
	}
}

// corruptions damage a closed spool of 30 fixed records in 3 segments
// (seqs 1-10, 11-20, 21-30) and say which seqs are lost.
func TestCorruption(t *testing.T) {
	const rec = recHeaderSize + 50
	off := func(seq int) int64 { return segHeaderSize + int64((seq-1)%10)*rec } // offset in its segment
	seg := func(seq int) string { return segName(uint64((seq-1)/10*10 + 1)) }
	flip := func(seq int, at int64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, seg(seq)), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			f.ReadAt(b, off(seq)+at)
			b[0] ^= 0x81
			if _, err := f.WriteAt(b, off(seq)+at); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		lost   []uint64
	}{
		{"payload bit flip", flip(15, recHeaderSize+10), []uint64{15}},
		{"length field", flip(15, 0), []uint64{15}},
		{"length field grows past file", flip(15, 2), []uint64{15}},
		{"crc field", flip(15, 5), []uint64{15}},
		{"seq field", flip(15, 9), []uint64{15}},
		{"first record", flip(1, recHeaderSize), []uint64{1}},
		{"last record of sealed segment", flip(20, recHeaderSize+3), []uint64{20}},
		{"last record of newest segment", flip(30, recHeaderSize+3), []uint64{30}},
		{"two records", func(t *testing.T, dir string) { flip(13, 20)(t, dir); flip(17, 3)(t, dir) }, []uint64{13, 17}},
		{"zeroed span", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, seg(13)), os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt(make([]byte, off(17)+30-off(13)-20), off(13)+20)
		}, []uint64{13, 14, 15, 16, 17}},
		{"segment header", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, seg(11)), os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt([]byte("GARBAGE!"), 0)
		}, seqRange(11, 20)},
		{"newest segment header", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, seg(21)), os.O_RDWR, 0)
			defer f.Close()
			f.WriteAt([]byte{0xEE}, 14) // inside the first-seq field
		}, seqRange(21, 30)},
		{"segment deleted", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, seg(11)))
		}, seqRange(11, 20)},
		{"newest segment truncated mid-record", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, seg(21)), off(28)+20)
		}, []uint64{28, 29, 30}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SegmentBytes: segHeaderSize + 10*rec, MaxBytes: 1 << 20}
			s := mustOpen(t, dir, o)
			appendN(t, s, 1, 30, fixed)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir)
			for round := range 3 { // later Opens must not count again
				s = mustOpen(t, dir, o)
				recs := readAll(t, s, 0)
				last := uint64(30)
				if round == 2 {
					last = 32 // appended after recovery in round 1
				}
				if got, want := seqs(recs), seqRange(1, last, tc.lost...); !slices.Equal(got, want) {
					t.Fatalf("round %d: read %v, want %v", round, got, want)
				}
				checkPayloads(t, recs, fixed)
				if l := s.Loss(); l.SpoolCorrupt != uint64(len(tc.lost)) || l.SpoolDropped != 0 {
					t.Fatalf("round %d: loss %+v, want %d corrupt", round, l, len(tc.lost))
				}
				if st := s.Stats(); st.Pending != last-uint64(len(tc.lost)) || st.LastSeq != last {
					t.Fatalf("round %d: stats %+v", round, st)
				}
				if round == 1 {
					appendN(t, s, 31, 2, fixed)
				}
				s.Close()
			}
		})
	}
}

func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 4096, MaxBytes: 1 << 20}
	s := mustOpen(t, dir, o)
	appendN(t, s, 1, 20, payload)
	s.Close()
	path := segFiles(t, dir)[0]
	fi, _ := os.Stat(path)

	// A write cut short: a header promising 100 bytes, 30 present.
	torn := appendRecord(nil, 21, bytes.Repeat([]byte("z"), 100))[:recHeaderSize+30]
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(torn)
	f.Close()

	s = mustOpen(t, dir, o)
	defer s.Close()
	if fi2, _ := os.Stat(path); fi2.Size() != fi.Size() {
		t.Fatalf("torn tail not truncated: %d, want %d", fi2.Size(), fi.Size())
	}
	if l := s.Loss(); l.SpoolCorrupt != 0 {
		t.Fatalf("a record never appended was counted lost: %+v", l)
	}
	appendN(t, s, 21, 5, payload)
	recs := readAll(t, s, 0)
	if got := seqs(recs); !slices.Equal(got, seqRange(1, 25)) {
		t.Fatalf("read %v", got)
	}
	checkPayloads(t, recs, payload)
}

func TestGarbageInDirectory(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 4096, MaxBytes: 1 << 20}
	s := mustOpen(t, dir, o)
	appendN(t, s, 1, 10, payload)
	s.Close()

	strangers := map[string]string{
		"notes.txt":                    "not ours",
		"junk.seg":                     "wrong name pattern",
		"0001.seg":                     "short name",
		"00000000000000000000.seg.bak": "backup",
	}
	for name, body := range strangers {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600)
	}
	os.Mkdir(filepath.Join(dir, "00000000000000000050.seg"), 0o700) // a directory with a segment name
	// A file named like a future segment, full of garbage.
	garbage := filepath.Join(dir, segName(99))
	os.WriteFile(garbage, bytes.Repeat([]byte{0xA5}, 500), 0o600)
	// An empty segment, as left by a crash right after creating it.
	os.WriteFile(filepath.Join(dir, segName(11)), nil, 0o600)

	s = mustOpen(t, dir, o)
	defer s.Close()
	if got := seqs(readAll(t, s, 0)); !slices.Equal(got, seqRange(1, 10)) {
		t.Fatalf("read %v", got)
	}
	for name, body := range strangers {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != body {
			t.Fatalf("foreign file %s touched: %q %v", name, b, err)
		}
	}
	if _, err := os.Stat(garbage); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("garbage segment not removed: %v", err)
	}
	if l := s.Loss(); l.SpoolCorrupt != 0 {
		t.Fatalf("loss %+v", l)
	}
	appendN(t, s, 11, 1, payload)
}

func TestBadState(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		want    error
	}{
		{"garbage", []byte("hello world, not a state file at all, definitely not"), ErrCorruptState},
		{"empty", nil, ErrCorruptState},
		{"bit flip", func() []byte {
			b := (&state{acked: 3, next: 10}).marshal()
			b[20] ^= 1
			return b
		}(), ErrCorruptState},
		{"acked beyond next", (&state{acked: 10, next: 10}).marshal(), ErrCorruptState},
		{"future version", func() []byte {
			b := (&state{next: 10}).marshal()
			b[8] = 9
			return fixCRC(b)
		}(), ErrUnsupportedVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Options{})
			appendN(t, s, 1, 3, payload)
			s.Close()
			os.WriteFile(filepath.Join(dir, stateName), tc.content, 0o600)
			before := segFiles(t, dir)
			_, err := Open(dir, Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			if after := segFiles(t, dir); !slices.Equal(before, after) {
				t.Fatalf("segments changed: %v -> %v", before, after)
			}
			// Not left locked.
			os.Remove(filepath.Join(dir, stateName))
			s, err = Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(readAll(t, s, 0)); !slices.Equal(got, seqRange(1, 3)) {
				t.Fatalf("without state: %v", got)
			}
			s.Close()
		})
	}
}

func fixCRC(b []byte) []byte {
	body := b[:len(b)-4]
	return binary.LittleEndian.AppendUint32(slices.Clone(body), crc32.Checksum(body, castagnoli))
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 20, MaxRecord: 1000})
	appendN(t, s, 1, 2, payload)
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"empty payload", func() error { _, err := s.Append([]byte{}); return err }, ErrEmptyRecord},
		{"nil in batch", func() error { _, err := s.Append(payload(1), nil); return err }, ErrEmptyRecord},
		{"too large", func() error { _, err := s.Append(make([]byte, 1001)); return err }, ErrTooLarge},
		{"ack beyond last", func() error { return s.Ack(3) }, ErrAckBeyondLast},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing was written by the rejected calls.
	if seq, err := s.Append(payload(3)); seq != 3 || err != nil {
		t.Fatalf("append after rejects: %d %v", seq, err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	if _, err := s.Append(payload(4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := s.Read(0, 1, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	opts := []struct {
		name string
		o    Options
	}{
		{"negative sync", Options{SyncInterval: -1}},
		{"budget below two segments", Options{SegmentBytes: 1 << 20, MaxBytes: 1 << 20}},
		{"record bigger than segment", Options{SegmentBytes: 4096, MaxBytes: 1 << 20, MaxRecord: 4096}},
		{"tiny segment", Options{SegmentBytes: 10}},
		{"negative record", Options{MaxRecord: -5}},
	}
	for _, tc := range opts {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(t.TempDir(), tc.o); !errors.Is(err, ErrBadOptions) {
				t.Fatalf("got %v, want ErrBadOptions", err)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 8192, MaxBytes: 64 << 20, SyncInterval: 5 * time.Millisecond})
	const writers, per = 8, 400
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				p := fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i)
				var err error
				if i%3 == 0 {
					_, err = s.Append(p, fmt.Appendf(nil, `{"w":%d,"i":%d,"b":1}`, w, i))
				} else {
					_, err = s.Append(p)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					s.Stats()
					s.Loss()
				}
			}
		})
	}
	want := writers * (per + (per+2)/3)
	got := map[string]uint64{}
	var after uint64
	deadline := time.After(30 * time.Second)
	for len(got) < want {
		recs, err := s.Read(after, 64, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Seq != after+1 {
				t.Fatalf("seq %d after %d", r.Seq, after)
			}
			if prev, dup := got[string(r.Event)]; dup {
				t.Fatalf("payload %s at seq %d and %d", r.Event, prev, r.Seq)
			}
			got[string(r.Event)] = r.Seq
			after = r.Seq
		}
		if len(recs) > 0 {
			if err := s.Ack(after); err != nil {
				t.Fatal(err)
			}
			continue
		}
		select {
		case <-s.Notify():
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("only %d of %d records", len(got), want)
		}
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.LastSeq != uint64(want) || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestConcurrentOverflow appends faster than the reader acks into a tiny
// budget: the reader must see strictly increasing seqs, and every seq must be
// either delivered or counted as dropped.
func TestConcurrentOverflow(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentBytes: 2048, MaxBytes: 8192, SyncInterval: time.Millisecond})
	defer s.Close()
	const writers, per = 4, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				if _, err := s.Append(payload(w*per + i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	delivered := map[uint64]bool{}
	var after uint64
	finished := false
	for !finished {
		select {
		case <-done:
			finished = true
		default:
		}
		recs, err := s.Read(after, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Seq <= after || delivered[r.Seq] {
				t.Fatalf("seq %d after %d", r.Seq, after)
			}
			delivered[r.Seq] = true
			after = r.Seq
		}
		if len(recs) > 0 {
			if err := s.Ack(after); err != nil {
				t.Fatal(err)
			}
		}
		if !finished && len(recs) == 0 {
			<-s.Notify()
		}
	}
	for _, r := range readAll(t, s, after) {
		delivered[r.Seq] = true
	}
	l := s.Loss()
	if uint64(len(delivered))+l.SpoolDropped < writers*per {
		t.Fatalf("%d delivered + %d dropped < %d appended", len(delivered), l.SpoolDropped, writers*per)
	}
	if l.SpoolDropped == 0 || l.DroppedSeqFirst == 0 || l.DroppedSeqLast < l.DroppedSeqFirst || l.SpoolCorrupt != 0 {
		t.Fatalf("expected overflow, loss %+v", l)
	}
	t.Logf("%d delivered, loss %+v", len(delivered), l)
}
