package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

const (
	stateMagic     = "MMRSTATE"
	stateVersion   = 1
	stateName      = "state"
	stateTmpName   = "state.tmp"
	stateFixedSize = 8 + 4 + 6*8 + 4 // magic version counters nGaps
	maxGaps        = 1024
)

// gap is an inclusive range of seqs that are gone and already counted.
type gap struct{ lo, hi uint64 }

// state is what survives restarts besides the segments themselves.
type state struct {
	acked     uint64
	next      uint64 // next seq to assign
	dropped   uint64
	corrupt   uint64
	dropFirst uint64
	dropLast  uint64
	// gaps lists seqs above acked that no segment holds any more (dropped
	// or corrupt) and that have been counted, so a restart counts only new
	// losses.
	gaps []gap
}

func (st *state) marshal() []byte {
	b := make([]byte, 0, stateFixedSize+16*len(st.gaps)+4)
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint32(b, stateVersion)
	for _, v := range []uint64{st.acked, st.next, st.dropped, st.corrupt, st.dropFirst, st.dropLast} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(st.gaps)))
	for _, g := range st.gaps {
		b = binary.LittleEndian.AppendUint64(b, g.lo)
		b = binary.LittleEndian.AppendUint64(b, g.hi)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func unmarshalState(b []byte) (state, error) {
	var st state
	if len(b) < stateFixedSize+4 || string(b[:8]) != stateMagic {
		return st, fmt.Errorf("%w: not a state file (%d bytes)", ErrCorruptState, len(b))
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return st, fmt.Errorf("%w: checksum mismatch", ErrCorruptState)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != stateVersion {
		return st, fmt.Errorf("%w: state version %d, this agent reads %d", ErrUnsupportedVersion, v, stateVersion)
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[12+8*i:]) }
	st.acked, st.next, st.dropped, st.corrupt, st.dropFirst, st.dropLast = u(0), u(1), u(2), u(3), u(4), u(5)
	n := int(binary.LittleEndian.Uint32(b[60:]))
	if n > maxGaps || len(body) != stateFixedSize+16*n {
		return st, fmt.Errorf("%w: %d gaps in %d bytes", ErrCorruptState, n, len(b))
	}
	for i := range n {
		o := stateFixedSize + 16*i
		g := gap{binary.LittleEndian.Uint64(b[o:]), binary.LittleEndian.Uint64(b[o+8:])}
		if g.lo > g.hi || (i > 0 && g.lo <= st.gaps[i-1].hi) {
			return st, fmt.Errorf("%w: gaps out of order", ErrCorruptState)
		}
		st.gaps = append(st.gaps, g)
	}
	if st.next == 0 || st.acked >= st.next {
		return st, fmt.Errorf("%w: acked %d, next %d", ErrCorruptState, st.acked, st.next)
	}
	return st, nil
}

// loadState reads the state file; a missing file is a new spool.
func loadState(dir string) (state, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateName))
	if errors.Is(err, fs.ErrNotExist) {
		return state{next: 1}, false, nil
	}
	if err != nil {
		return state{}, false, fmt.Errorf("read state: %w", err)
	}
	st, err := unmarshalState(b)
	if err != nil {
		return state{}, false, fmt.Errorf("state file %s: %w", filepath.Join(dir, stateName), err)
	}
	return st, true, nil
}

// writeState replaces the state file atomically and durably.
func writeState(dir string, st *state) error {
	tmp := filepath.Join(dir, stateTmpName)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, err = f.Write(st.marshal())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, stateName))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// gapCount is the number of seqs the gaps cover.
func gapCount(gs []gap) uint64 {
	var n uint64
	for _, g := range gs {
		n += g.hi - g.lo + 1
	}
	return n
}

// addGap inserts [lo, hi] into a sorted, disjoint gap list, merging
// neighbours, and bounds the list's length by merging its oldest entries.
func addGap(gs []gap, lo, hi uint64) []gap {
	if lo > hi {
		return gs
	}
	gs = append(gs, gap{lo, hi})
	slices.SortFunc(gs, func(a, b gap) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := gs[:0]
	for _, g := range gs {
		if n := len(out); n > 0 && g.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, g.hi)
			continue
		}
		out = append(out, g)
	}
	for len(out) > maxGaps {
		out[1].lo = out[0].lo
		out = out[1:]
	}
	return out
}

// pruneGaps drops the part of the gaps at or below acked.
func pruneGaps(gs []gap, acked uint64) []gap {
	out := gs[:0]
	for _, g := range gs {
		if g.hi <= acked {
			continue
		}
		g.lo = max(g.lo, acked+1)
		out = append(out, g)
	}
	return out
}

// subtractGaps returns the seqs of [lo, hi] not covered by gs, as gaps.
func subtractGaps(lo, hi uint64, gs []gap) []gap {
	var out []gap
	cur := lo
	for _, g := range gs {
		if g.hi < cur {
			continue
		}
		if g.lo > hi {
			break
		}
		if g.lo > cur {
			out = append(out, gap{cur, g.lo - 1})
		}
		if g.hi >= hi {
			return out
		}
		cur = g.hi + 1
	}
	if cur <= hi {
		out = append(out, gap{cur, hi})
	}
	return out
}
