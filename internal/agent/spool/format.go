package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

const (
	segMagic       = "MMRSPOOL"
	segVersion     = 1
	segHeaderSize  = 24 // magic(8) version(4) firstSeq(8) crc(4)
	recHeaderSize  = 16 // len(4) crc(4) seq(8)
	maxRecordLimit = 64 << 20
	windowSize     = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadHeader means a segment file does not start with a valid header.
var errBadHeader = errors.New("bad segment header")

// encodeHeader returns the header of a segment whose first record is firstSeq.
func encodeHeader(firstSeq uint64) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, segMagic)
	binary.LittleEndian.PutUint32(h[8:], segVersion)
	binary.LittleEndian.PutUint64(h[12:], firstSeq)
	binary.LittleEndian.PutUint32(h[20:], crc32.Checksum(h[:20], castagnoli))
	return h
}

// decodeHeader validates a segment header and returns its first seq.
func decodeHeader(h []byte) (uint64, error) {
	if len(h) < segHeaderSize {
		return 0, fmt.Errorf("%w: %d bytes", errBadHeader, len(h))
	}
	if string(h[:8]) != segMagic {
		return 0, fmt.Errorf("%w: magic %q", errBadHeader, h[:8])
	}
	if crc32.Checksum(h[:20], castagnoli) != binary.LittleEndian.Uint32(h[20:]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errBadHeader)
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != segVersion {
		return 0, fmt.Errorf("%w: segment version %d, this agent reads %d", ErrUnsupportedVersion, v, segVersion)
	}
	first := binary.LittleEndian.Uint64(h[12:])
	if first == 0 {
		return 0, fmt.Errorf("%w: first seq 0", errBadHeader)
	}
	return first, nil
}

// recordCRC is the checksum stored in a record header h: it covers the
// length, the seq and the payload.
func recordCRC(h, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[0:4])
	c = crc32.Update(c, castagnoli, h[8:16])
	return crc32.Update(c, castagnoli, payload)
}

// appendRecord encodes one record onto dst.
func appendRecord(dst []byte, seq uint64, payload []byte) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	binary.LittleEndian.PutUint32(dst[start+4:], recordCRC(dst[start:], payload))
	return append(dst, payload...)
}

// window serves byte ranges of a file through one reusable buffer, so the
// scanner can look at any offset (resync) without a read per record.
type window struct {
	r    io.ReaderAt
	end  int64 // bytes beyond end are never read
	base int64
	buf  []byte
}

func (w *window) bytes(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off+int64(n) > w.end {
		return nil, io.ErrUnexpectedEOF
	}
	if off >= w.base && off+int64(n) <= w.base+int64(len(w.buf)) {
		return w.buf[off-w.base : off-w.base+int64(n)], nil
	}
	size := int64(max(n, windowSize))
	size = min(size, w.end-off)
	if int64(cap(w.buf)) < size {
		w.buf = make([]byte, size)
	}
	w.buf = w.buf[:size]
	got, err := w.r.ReadAt(w.buf, off)
	if int64(got) < size {
		w.buf = w.buf[:0]
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read at %d: %w", off, err)
	}
	w.base = off
	return w.buf[:n], nil
}

// scanner walks the records of one segment between two offsets. It returns
// only records whose checksum is valid and whose seqs strictly increase;
// after a bad record it resynchronises on the next valid one.
type scanner struct {
	w    window
	off  int64  // next offset to look at
	prev uint64 // seq of the last record returned (or first-1)

	// Filled by next for the record it returns.
	seq     uint64
	recOff  int64
	payload []byte // valid until the next call
	resync  bool   // bytes before recOff were skipped as corrupt
}

func newScanner(r io.ReaderAt, start, end int64, prev uint64) *scanner {
	return &scanner{w: window{r: r, end: end}, off: start, prev: prev}
}

// candidate reports whether a valid record whose seq is at most maxSeq
// starts at off.
func (sc *scanner) candidate(off int64, maxSeq uint64) (ok bool, err error) {
	h, err := sc.w.bytes(off, recHeaderSize)
	if err != nil {
		return false, err
	}
	n := binary.LittleEndian.Uint32(h[0:])
	crc := binary.LittleEndian.Uint32(h[4:])
	seq := binary.LittleEndian.Uint64(h[8:])
	var hdr [recHeaderSize]byte // h may move when the window slides
	copy(hdr[:], h)
	if seq <= sc.prev || seq > maxSeq || n > maxRecordLimit || off+recHeaderSize+int64(n) > sc.w.end {
		return false, nil
	}
	p, err := sc.w.bytes(off+recHeaderSize, int(n))
	if err != nil {
		return false, err
	}
	if recordCRC(hdr[:], p) != crc {
		return false, nil
	}
	sc.seq, sc.recOff, sc.payload = seq, off, p
	return true, nil
}

// next advances to the next valid record. It returns false at the end; then
// sc.off is the end of the last valid record, and any bytes between it and
// the end are a torn or corrupt tail.
func (sc *scanner) next() (bool, error) {
	sc.resync = false
	start := sc.off
	if start+recHeaderSize > sc.w.end {
		return false, nil
	}
	// At a record boundary any later seq is accepted (a segment recovered
	// after a counted loss may continue past a gap). Further on, each lost
	// record occupied at least a header, which bounds how far seq can jump,
	// so random bytes rarely even reach the checksum.
	ok, err := sc.candidate(start, math.MaxUint64)
	if err != nil {
		return false, err
	}
	for q := start + 1; !ok && q+recHeaderSize <= sc.w.end; q++ {
		ok, err = sc.candidate(q, sc.prev+1+uint64(q-start)/recHeaderSize)
		if err != nil {
			return false, err
		}
		sc.resync = ok
	}
	if !ok {
		return false, nil
	}
	sc.prev = sc.seq
	sc.off = sc.recOff + recHeaderSize + int64(len(sc.payload))
	return true, nil
}
