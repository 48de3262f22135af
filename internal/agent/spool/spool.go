package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/wire"
)

// Errors returned by the spool; match them with errors.Is.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("spool closed")
	// ErrTooLarge means a payload exceeds Options.MaxRecord.
	ErrTooLarge = errors.New("record too large")
	// ErrEmptyRecord means a payload has no bytes.
	ErrEmptyRecord = errors.New("empty record")
	// ErrAckBeyondLast means Ack named a seq that was never appended.
	ErrAckBeyondLast = errors.New("ack beyond last appended seq")
	// ErrCorruptState means the state file is unreadable; Open refuses to
	// guess the acknowledged seq and touches nothing.
	ErrCorruptState = errors.New("corrupt spool state")
	// ErrUnsupportedVersion means a file was written by a newer format.
	ErrUnsupportedVersion = errors.New("unsupported spool format version")
	// ErrLocked means another Spool (maybe another process) has the directory open.
	ErrLocked = errors.New("spool directory in use")
	// ErrBadOptions means Options failed validation.
	ErrBadOptions = errors.New("invalid spool options")
)

// Defaults applied to zero Options fields (SyncInterval excepted: 0 is meaningful).
const (
	DefaultMaxBytes     = 512 << 20
	DefaultSegmentBytes = 8 << 20
	DefaultSyncInterval = time.Second
	DefaultMaxRecord    = 4 << 20
)

const (
	segSuffix  = ".seg"
	lockName   = "lock"
	indexEvery = 64 << 10 // bytes between sparse index entries
)

// Options configures a Spool; zero fields take the defaults above.
type Options struct {
	MaxBytes     int64         // total disk budget, default 512 MiB; on overflow the oldest segment is dropped and the loss counted
	SegmentBytes int64         // default 8 MiB
	SyncInterval time.Duration // fsync at most this often (use DefaultOptions for 1s); 0 = fsync every Append
	MaxRecord    int           // default 4 MiB (capped to what fits a segment); bigger payloads are rejected with an error
}

// DefaultOptions returns the production settings, including the 1s sync interval.
func DefaultOptions() Options {
	return Options{MaxBytes: DefaultMaxBytes, SegmentBytes: DefaultSegmentBytes, SyncInterval: DefaultSyncInterval, MaxRecord: DefaultMaxRecord}
}

func (o Options) validate() (Options, error) {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = max(DefaultMaxBytes, 2*o.SegmentBytes)
	}
	fit := o.SegmentBytes - segHeaderSize - recHeaderSize
	if o.MaxRecord == 0 {
		o.MaxRecord = int(min(DefaultMaxRecord, fit))
	}
	switch {
	case o.SegmentBytes < segHeaderSize+recHeaderSize+1:
		return o, fmt.Errorf("%w: SegmentBytes %d is below %d", ErrBadOptions, o.SegmentBytes, segHeaderSize+recHeaderSize+1)
	case o.MaxBytes < 2*o.SegmentBytes:
		return o, fmt.Errorf("%w: MaxBytes %d is below 2×SegmentBytes (%d)", ErrBadOptions, o.MaxBytes, 2*o.SegmentBytes)
	case o.SyncInterval < 0:
		return o, fmt.Errorf("%w: SyncInterval %v is negative", ErrBadOptions, o.SyncInterval)
	case o.MaxRecord < 1 || o.MaxRecord > maxRecordLimit:
		return o, fmt.Errorf("%w: MaxRecord %d is outside 1..%d", ErrBadOptions, o.MaxRecord, maxRecordLimit)
	case int64(o.MaxRecord) > fit:
		return o, fmt.Errorf("%w: MaxRecord %d does not fit SegmentBytes %d (max %d)", ErrBadOptions, o.MaxRecord, o.SegmentBytes, fit)
	}
	return o, nil
}

type indexEntry struct {
	seq uint64
	off int64
}

// segment is the in-memory view of one segment file.
type segment struct {
	first       uint64 // from the file name
	last        uint64 // last valid seq, 0 while empty
	size        int64  // bytes on disk
	end         int64  // end of the last valid record: reads stop here
	index       []indexEntry
	lastIndexed int64
}

func (g *segment) note(seq uint64, off int64, force bool) {
	if force || len(g.index) == 0 || off-g.lastIndexed >= indexEvery {
		g.index = append(g.index, indexEntry{seq, off})
		g.lastIndexed = off
	}
	g.last = seq
}

func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

func parseSegName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	return v, err == nil && v > 0
}

// Spool is a durable, bounded queue of records; it is safe for concurrent use.
type Spool struct {
	dir    string
	opts   Options
	lock   *os.File
	notify chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup

	stateMu sync.Mutex // serialises state-file writes; always taken before mu

	mu        sync.Mutex
	st        state
	segs      []*segment
	active    *os.File // write handle of activeSeg
	activeSeg *segment // the last segment, while it takes appends
	bytes     int64
	dirty     bool  // appended since the last sync
	syncErr   error // from the background syncer, returned by the next Sync or Close
	closed    bool
	buf       []byte
	pend      []indexEntry // records in buf, offsets relative to buf
}

// Open opens or creates the spool in dir and recovers it: it validates every
// segment, truncates a torn tail, counts records lost to corruption exactly
// once, and deletes segments that are fully acknowledged.
func Open(dir string, opts Options) (*Spool, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open spool %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open spool: lock: %w", err)
	}
	s := &Spool{dir: dir, opts: opts, lock: lock, notify: make(chan struct{}, 1), done: make(chan struct{})}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	if opts.SyncInterval > 0 {
		s.wg.Add(1)
		go s.syncer()
	}
	return s, nil
}

func (s *Spool) recover() error {
	if err := os.Remove(filepath.Join(s.dir, stateTmpName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	st, existed, err := loadState(s.dir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var firsts []uint64
	for _, e := range entries {
		if first, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)

	var present []gap // seqs readable, sorted
	var maxSeq uint64
	for _, first := range firsts {
		seg, err := s.recoverSegment(first, maxSeq)
		if err != nil {
			return err
		}
		if seg == nil {
			continue
		}
		for _, r := range seg.ranges {
			if n := len(present); n > 0 && present[n-1].hi+1 == r.lo {
				present[n-1].hi = r.hi
			} else {
				present = append(present, r)
			}
		}
		maxSeq = seg.last
		s.segs = append(s.segs, seg.segment)
		s.bytes += seg.size
	}
	if !existed && len(s.segs) > 0 {
		// The state file is gone but segments remain: what preceded the
		// oldest segment was acked or already reported; do not invent loss.
		st.acked = s.segs[0].first - 1
	}
	st.next = max(st.next, maxSeq+1, st.acked+1)

	// Every seq in (acked, next) is either readable or lost; count only the
	// losses not counted by an earlier Open.
	var missing []gap
	if st.next-1 > st.acked {
		missing = subtractGaps(st.acked+1, st.next-1, present)
	}
	var known []gap
	for _, g := range pruneGaps(slices.Clone(st.gaps), st.acked) {
		known = addGap(known, g.lo, g.hi)
	}
	for _, m := range missing {
		st.corrupt += gapCount(subtractGaps(m.lo, m.hi, known))
	}
	st.gaps = nil
	for _, m := range missing {
		st.gaps = addGap(st.gaps, m.lo, m.hi)
	}
	s.st = st
	s.deleteAckedLocked()

	if n := len(s.segs); n > 0 {
		// Appends continue in the newest segment only if no seq is missing
		// at its end, so seqs stay consecutive within a segment.
		seg := s.segs[n-1]
		f, err := os.OpenFile(filepath.Join(s.dir, segName(seg.first)), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		if seg.size > seg.end {
			if err := f.Truncate(seg.end); err != nil {
				f.Close()
				return fmt.Errorf("truncate torn tail of %s: %w", segName(seg.first), err)
			}
			s.bytes -= seg.size - seg.end
			seg.size = seg.end
		}
		if seg.last+1 == s.st.next {
			s.active, s.activeSeg = f, seg
		} else {
			f.Close()
		}
	}
	return writeState(s.dir, &s.st)
}

type recovered struct {
	*segment
	ranges []gap
}

// recoverSegment scans one segment file; it returns nil after removing a
// file that holds no valid record (empty, torn header, garbage).
func (s *Spool) recoverSegment(first, prevMax uint64) (*recovered, error) {
	path := filepath.Join(s.dir, segName(first))
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h := make([]byte, segHeaderSize)
	n, _ := f.ReadAt(h, 0)
	hfirst, herr := decodeHeader(h[:n])
	if errors.Is(herr, ErrUnsupportedVersion) {
		return nil, fmt.Errorf("%s: %w", segName(first), herr)
	}
	rec := &recovered{segment: &segment{first: first, size: fi.Size(), end: segHeaderSize}}
	if herr == nil && hfirst == first {
		sc := newScanner(f, segHeaderSize, fi.Size(), max(first-1, prevMax))
		for {
			ok, err := sc.next()
			if err != nil {
				return nil, fmt.Errorf("scan %s: %w", segName(first), err)
			}
			if !ok {
				break
			}
			rec.note(sc.seq, sc.recOff, sc.resync)
			if n := len(rec.ranges); n > 0 && rec.ranges[n-1].hi+1 == sc.seq {
				rec.ranges[n-1].hi = sc.seq
			} else {
				rec.ranges = append(rec.ranges, gap{sc.seq, sc.seq})
			}
		}
		rec.end = sc.off
	}
	if rec.last == 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove unreadable segment: %w", err)
		}
		return nil, nil
	}
	return rec, nil
}

// Append writes payloads as consecutive records and returns the seq of the
// last one. Data is written with write(2) before Append returns, so it
// survives the process being killed; it is fsync'd per Options.SyncInterval.
// On a write error (a full disk), lastSeq is the last record stored by this
// call (0 if none) and the records after it were not stored.
func (s *Spool) Append(payloads ...[]byte) (lastSeq uint64, err error) {
	for i, p := range payloads {
		if len(p) == 0 {
			return 0, fmt.Errorf("spool append: payload %d: %w", i, ErrEmptyRecord)
		}
		if len(p) > s.opts.MaxRecord {
			return 0, fmt.Errorf("spool append: payload %d: %w: %d bytes, limit %d", i, ErrTooLarge, len(p), s.opts.MaxRecord)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	before := s.st.next
	dropped, err := s.appendLocked(payloads)
	if err == nil && s.opts.SyncInterval == 0 && s.active != nil {
		if serr := s.active.Sync(); serr != nil {
			err = fmt.Errorf("spool append: fsync: %w", serr)
		}
	} else if s.st.next > before {
		s.dirty = true
	}
	if s.st.next > before {
		lastSeq = s.st.next - 1
	}
	s.mu.Unlock()
	if lastSeq > 0 {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	if dropped && s.opts.SyncInterval == 0 {
		// Persist the loss now; with a syncer, the next tick does it.
		if perr := s.persistState(); perr != nil {
			s.mu.Lock()
			s.syncErr = perr
			s.mu.Unlock()
		}
	}
	return lastSeq, err
}

func (s *Spool) appendLocked(payloads [][]byte) (dropped bool, err error) {
	s.buf, s.pend = s.buf[:0], s.pend[:0]
	seq := s.st.next
	for _, p := range payloads {
		rec := int64(recHeaderSize + len(p))
		if g := s.activeSeg; g != nil && g.size+int64(len(s.buf))+rec > s.opts.SegmentBytes && (g.last != 0 || len(s.buf) > 0) {
			if err := s.flushLocked(); err != nil {
				return dropped, err
			}
			if err := s.sealLocked(); err != nil {
				return dropped, err
			}
		}
		need := rec
		if s.activeSeg == nil {
			need += segHeaderSize
		}
		for s.bytes+int64(len(s.buf))+need > s.opts.MaxBytes && len(s.segs) > 0 && s.segs[0] != s.activeSeg {
			if err := s.dropOldestLocked(); err != nil {
				return dropped, err
			}
			dropped = true
		}
		if s.activeSeg == nil {
			if err := s.createLocked(seq); err != nil {
				return dropped, err
			}
		}
		s.pend = append(s.pend, indexEntry{seq, int64(len(s.buf))})
		s.buf = appendRecord(s.buf, seq, p)
		seq++
	}
	return dropped, s.flushLocked()
}

// flushLocked writes the buffered records to the active segment; on failure
// it cuts the partial write off again, so the segment stays valid.
func (s *Spool) flushLocked() error {
	if len(s.buf) == 0 {
		return nil
	}
	g := s.activeSeg
	if _, err := s.active.WriteAt(s.buf, g.size); err != nil {
		werr := fmt.Errorf("spool append: %w", err)
		if terr := s.active.Truncate(g.size); terr != nil {
			// The tail holds a partial record; stop appending to this file.
			// Reads stop at g.end and recovery truncates the tail.
			if fi, serr := s.active.Stat(); serr == nil {
				s.bytes += fi.Size() - g.size
				g.size = fi.Size()
			}
			s.active.Close()
			s.active, s.activeSeg = nil, nil
			if g.last == 0 {
				os.Remove(filepath.Join(s.dir, segName(g.first)))
				s.removeSegLocked(len(s.segs) - 1)
			}
		}
		s.buf, s.pend = s.buf[:0], s.pend[:0]
		return werr
	}
	for _, e := range s.pend {
		g.note(e.seq, g.size+e.off, false)
	}
	g.size += int64(len(s.buf))
	g.end = g.size
	s.bytes += int64(len(s.buf))
	s.st.next = g.last + 1
	s.buf, s.pend = s.buf[:0], s.pend[:0]
	return nil
}

// sealLocked makes the active segment durable and stops appending to it.
func (s *Spool) sealLocked() error {
	if s.active == nil {
		return nil
	}
	err := s.active.Sync()
	s.active.Close()
	s.active, s.activeSeg = nil, nil
	if err != nil {
		return fmt.Errorf("spool append: fsync sealed segment: %w", err)
	}
	return nil
}

func (s *Spool) createLocked(first uint64) error {
	path := filepath.Join(s.dir, segName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool append: create segment: %w", err)
	}
	if _, err = f.WriteAt(encodeHeader(first), 0); err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("spool append: create segment %s: %w", segName(first), err)
	}
	g := &segment{first: first, size: segHeaderSize, end: segHeaderSize}
	s.segs = append(s.segs, g)
	s.bytes += segHeaderSize
	s.active, s.activeSeg = f, g
	return nil
}

// dropOldestLocked deletes the oldest sealed segment to stay in budget and
// counts its unacknowledged records as dropped.
func (s *Spool) dropOldestLocked() error {
	g := s.segs[0]
	if err := os.Remove(filepath.Join(s.dir, segName(g.first))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool append: drop oldest segment: %w", err)
	}
	s.removeSegLocked(0)
	lo := max(g.first, s.st.acked+1)
	if g.last < lo {
		return nil
	}
	lost := subtractGaps(lo, g.last, s.st.gaps)
	if n := gapCount(lost); n > 0 {
		s.st.dropped += n
		if s.st.dropFirst == 0 {
			s.st.dropFirst = lost[0].lo
		}
		s.st.dropLast = lost[len(lost)-1].hi
	}
	s.st.gaps = addGap(s.st.gaps, lo, g.last)
	return nil
}

func (s *Spool) removeSegLocked(i int) {
	s.bytes -= s.segs[i].size
	s.segs = slices.Delete(s.segs, i, i+1)
}

// deleteAckedLocked removes segments whose records are all acknowledged.
func (s *Spool) deleteAckedLocked() (removed int) {
	for len(s.segs) > 0 && s.segs[0].last <= s.st.acked {
		g := s.segs[0]
		if g == s.activeSeg {
			if g.last == 0 {
				break // a fresh segment waiting for its first record
			}
			s.active.Close()
			s.active, s.activeSeg = nil, nil
		}
		if err := os.Remove(filepath.Join(s.dir, segName(g.first))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			break // retried at the next Ack or Open
		}
		s.removeSegLocked(0)
		removed++
	}
	return removed
}

// Read returns records with seq > after, in order, up to maxRecords records
// and maxBytes payload bytes (at least one record if any is pending; a
// limit <= 0 means no limit). Seqs lost to overflow or corruption are
// skipped.
func (s *Spool) Read(after uint64, maxRecords, maxBytes int) ([]wire.Record, error) {
	type view struct {
		first uint64
		end   int64
		index []indexEntry
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	var views []view
	for _, g := range s.segs {
		if g.last > after {
			views = append(views, view{g.first, g.end, g.index})
		}
	}
	s.mu.Unlock()

	var out []wire.Record
	total, prev := 0, after
read:
	for _, v := range views {
		f, err := os.Open(filepath.Join(s.dir, segName(v.first)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // acked or dropped since the snapshot
		}
		if err != nil {
			return nil, fmt.Errorf("spool read: %w", err)
		}
		// Start at the last index entry at or before after+1.
		i := sort.Search(len(v.index), func(i int) bool { return v.index[i].seq > after+1 }) - 1
		i = max(i, 0)
		sc := newScanner(f, v.index[i].off, v.end, v.index[i].seq-1)
		for {
			ok, err := sc.next()
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("spool read %s: %w", segName(v.first), err)
			}
			if !ok {
				break
			}
			if sc.seq <= prev {
				continue
			}
			if (maxRecords > 0 && len(out) >= maxRecords) || (maxBytes > 0 && len(out) > 0 && total+len(sc.payload) > maxBytes) {
				f.Close()
				break read
			}
			out = append(out, wire.Record{Seq: sc.seq, Event: slices.Clone(sc.payload)})
			total += len(sc.payload)
			prev = sc.seq
		}
		f.Close()
	}

	// A segment dropped while we read must not be delivered and counted lost.
	s.mu.Lock()
	floor := s.st.next
	if len(s.segs) > 0 {
		floor = s.segs[0].first
	}
	s.mu.Unlock()
	cut := 0
	for cut < len(out) && out[cut].Seq < floor {
		cut++
	}
	return out[cut:], nil
}

// Ack records durably that the server stored every record up to seq, then
// deletes the segments that hold nothing newer. Acking an older seq is a no-op.
func (s *Spool) Ack(seq uint64) error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if seq <= s.st.acked {
		s.mu.Unlock()
		return nil
	}
	if seq >= s.st.next {
		last := s.st.next - 1
		s.mu.Unlock()
		return fmt.Errorf("spool ack %d: %w (last %d)", seq, ErrAckBeyondLast, last)
	}
	st := s.snapshotLocked()
	s.mu.Unlock()
	st.acked = seq
	st.gaps = pruneGaps(st.gaps, seq)
	err := writeState(s.dir, &st)
	if err != nil && !errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("spool ack %d: %w", seq, err)
	}
	// On a full disk the state file cannot be rewritten until acked
	// segments free space: delete them first, then retry.
	s.mu.Lock()
	s.st.acked = max(s.st.acked, seq)
	s.st.gaps = pruneGaps(s.st.gaps, s.st.acked)
	removed := s.deleteAckedLocked()
	if err != nil {
		st = s.snapshotLocked()
	}
	s.mu.Unlock()
	if err != nil {
		if err = writeState(s.dir, &st); err != nil {
			return fmt.Errorf("spool ack %d: not durable: %w", seq, err)
		}
	}
	if removed > 0 {
		_ = syncDir(s.dir) // a lost unlink is redone by the next Open
	}
	return nil
}

func (s *Spool) snapshotLocked() state {
	st := s.st
	st.gaps = slices.Clone(s.st.gaps)
	return st
}

func (s *Spool) persistState() error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	st := s.snapshotLocked()
	s.mu.Unlock()
	return writeState(s.dir, &st)
}

// Acked returns the last acknowledged seq.
func (s *Spool) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.acked
}

// Notify returns a channel that receives a value after records are appended.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Stats summarises the spool for the agent's status.
func (s *Spool) Stats() wire.SpoolStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.st.next - 1
	return wire.SpoolStatus{
		Bytes:    s.bytes,
		Segments: len(s.segs),
		Pending:  last - s.st.acked - gapCount(s.st.gaps),
		LastSeq:  last,
		AckedSeq: s.st.acked,
		Dropped:  s.st.dropped,
		Corrupt:  s.st.corrupt,
	}
}

// Loss returns the records lost since the spool was created; DroppedSeqFirst
// and DroppedSeqLast bound the seqs dropped on overflow.
func (s *Spool) Loss() schema.Loss {
	s.mu.Lock()
	defer s.mu.Unlock()
	return schema.Loss{
		SpoolDropped:    s.st.dropped,
		SpoolCorrupt:    s.st.corrupt,
		DroppedSeqFirst: s.st.dropFirst,
		DroppedSeqLast:  s.st.dropLast,
	}
}

// Sync fsyncs appended records and the state file; it also returns an error
// the background syncer met since the last call.
func (s *Spool) Sync() error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	err := s.syncLocked()
	s.mu.Unlock()
	return err
}

// syncLocked runs with stateMu and mu held.
func (s *Spool) syncLocked() error {
	f := s.active
	s.dirty = false
	bgErr := s.syncErr
	s.syncErr = nil
	st := s.snapshotLocked()
	// fsync without blocking appenders; a concurrent seal or delete closes
	// f only after syncing it or after its records were acked.
	s.mu.Unlock()
	var err error
	if f != nil {
		if err = f.Sync(); errors.Is(err, os.ErrClosed) {
			err = nil
		}
	}
	if err == nil {
		err = writeState(s.dir, &st)
	}
	s.mu.Lock()
	if err != nil {
		err = fmt.Errorf("spool sync: %w", err)
	}
	return errors.Join(bgErr, err)
}

func (s *Spool) syncer() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.stateMu.Lock()
		s.mu.Lock()
		if s.dirty && !s.closed {
			if err := s.syncLocked(); err != nil {
				s.syncErr = err
			}
		}
		s.mu.Unlock()
		s.stateMu.Unlock()
	}
}

// Close syncs and closes the spool; later calls return nil.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true // from here on, Append, Read and Ack return ErrClosed
	s.mu.Unlock()
	close(s.done)
	s.wg.Wait()
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.syncLocked()
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	if s.active != nil {
		s.active.Close()
		s.active, s.activeSeg = nil, nil
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}
