package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func fuzzSeeds() [][]byte {
	valid := encodeHeader(1)
	for i := 1; i <= 4; i++ {
		valid = appendRecord(valid, uint64(i), payload(i))
	}
	flipped := bytes.Clone(valid)
	flipped[segHeaderSize+recHeaderSize+3] ^= 0x10
	badLen := bytes.Clone(valid)
	badLen[segHeaderSize] = 0xff
	return [][]byte{
		valid,
		flipped,
		badLen,
		valid[:len(valid)-7],
		valid[:segHeaderSize],
		valid[:10],
		nil,
		bytes.Repeat([]byte{0}, 200),
		append(encodeHeader(1), bytes.Repeat([]byte{0xff}, 64)...),
	}
}

// FuzzSegment feeds arbitrary bytes as a segment file through Open and Read:
// it must never panic or fail, and every record returned must be one that
// really was in the file with a valid checksum, in increasing seq order.
func FuzzSegment(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{SegmentBytes: 1 << 16, MaxBytes: 1 << 20, SyncInterval: time.Hour})
		if err != nil {
			t.Fatalf("Open on a garbage segment: %v", err)
		}
		defer s.Close()
		var prev uint64
		for _, r := range readAll(t, s, 0) {
			if r.Seq <= prev {
				t.Fatalf("seq %d after %d", r.Seq, prev)
			}
			prev = r.Seq
			if !bytes.Contains(data, appendRecord(nil, r.Seq, r.Event)) {
				t.Fatalf("record seq %d (%d bytes) is not a checksummed record of the input", r.Seq, len(r.Event))
			}
		}
		st := s.Stats()
		if st.LastSeq < prev || st.Pending > st.LastSeq {
			t.Fatalf("stats %+v after reading up to %d", st, prev)
		}
		// The recovered spool still takes appends after the highest seq.
		last, err := s.Append([]byte(`{}`))
		if err != nil || last <= prev {
			t.Fatalf("append after recovery: seq %d, %v (prev %d)", last, err, prev)
		}
	})
}

// FuzzScanner drives the record scanner directly over arbitrary bytes, which
// is much faster than going through files.
func FuzzScanner(f *testing.F) {
	for _, s := range fuzzSeeds() {
		if len(s) >= segHeaderSize {
			f.Add(s[segHeaderSize:], uint64(0))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, prev uint64) {
		if prev > 1<<62 {
			prev = 1 << 62
		}
		sc := newScanner(bytes.NewReader(data), 0, int64(len(data)), prev)
		last := prev
		for {
			ok, err := sc.next()
			if err != nil {
				t.Fatalf("scan error over an in-memory file: %v", err)
			}
			if !ok {
				break
			}
			if sc.seq <= last {
				t.Fatalf("seq %d after %d", sc.seq, last)
			}
			last = sc.seq
			if recordCRC(data[sc.recOff:], sc.payload) != crcAt(data, sc.recOff) {
				t.Fatalf("record at %d has a bad checksum", sc.recOff)
			}
		}
		if sc.off > int64(len(data)) {
			t.Fatalf("end %d beyond %d", sc.off, len(data))
		}
	})
}

func crcAt(data []byte, off int64) uint32 {
	b := data[off+4 : off+8]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
