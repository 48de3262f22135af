package process

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
)

// Layout of struct event_hdr in bpf/process.c; decode_test checks it
// against the bpf2go twin.
const (
	hdrSize = 136

	flagExe       = 0x01
	flagExeTrunc  = 0x02
	flagCwd       = 0x04
	flagCwdTrunc  = 0x08
	flagArgsTrunc = 0x10
	flagArgsFault = 0x20
	flagUnlinked  = 0x40
)

// Decode errors.
var (
	errShort = errors.New("record shorter than its header")
	errKind  = errors.New("unknown event kind")
	errTail  = errors.New("tail lengths exceed the record")
)

// decode parses one ring-buffer record into ev, reusing nothing from the
// record (the ring memory is overwritten after the next read).
func decode(b []byte, ev *sensor.ProcessEvent) error {
	if len(b) < hdrSize {
		return fmt.Errorf("decode: %w: %d < %d bytes", errShort, len(b), hdrSize)
	}
	le := binary.LittleEndian
	kind := sensor.Kind(b[0])
	if kind < sensor.KindExec || kind > sensor.KindExit {
		return fmt.Errorf("decode: %w %d", errKind, kind)
	}
	flags := b[1]
	exeLen := int(le.Uint16(b[2:]))
	cwdLen := int(le.Uint16(b[4:]))
	argsLen := int(le.Uint32(b[8:]))
	tail := b[hdrSize:]
	if exeLen+cwdLen+argsLen > len(tail) {
		return fmt.Errorf("decode: %w: %d+%d+%d > %d", errTail, exeLen, cwdLen, argsLen, len(tail))
	}

	*ev = sensor.ProcessEvent{
		Kind:              kind,
		PID:               le.Uint32(b[12:]),
		TID:               le.Uint32(b[16:]),
		PPID:              le.Uint32(b[20:]),
		UID:               le.Uint32(b[24:]),
		EUID:              le.Uint32(b[28:]),
		GID:               le.Uint32(b[32:]),
		EGID:              le.Uint32(b[36:]),
		LoginUID:          le.Uint32(b[40:]),
		SessionID:         le.Uint32(b[44:]),
		BootNs:            le.Uint64(b[56:]),
		StartBootNs:       le.Uint64(b[64:]),
		ParentStartBootNs: le.Uint64(b[72:]),
		CgroupID:          le.Uint64(b[80:]),
		Comm:              cString(b[120:136]),
	}
	if flags&flagExe != 0 {
		ev.ExeDev = encodeDev(le.Uint32(b[52:]))
		ev.ExeIno = le.Uint64(b[88:])
		ev.ExeSize = int64(le.Uint64(b[96:]))
		ev.ExeMtimeNs = int64(le.Uint64(b[104:]))
		ev.ExeCtimeNs = int64(le.Uint64(b[112:]))
		ev.Exe = joinPath(tail[:exeLen], flags&flagExeTrunc != 0)
		if flags&flagUnlinked != 0 {
			// As readlink(/proc/PID/exe) shows it: fileless or replaced.
			ev.Exe += " (deleted)"
		}
	}
	if flags&flagCwd != 0 {
		ev.Cwd = joinPath(tail[exeLen:exeLen+cwdLen], flags&flagCwdTrunc != 0)
	}
	if argsLen > 0 {
		ev.Args = splitArgs(tail[exeLen+cwdLen : exeLen+cwdLen+argsLen])
	}
	ev.ArgsTruncated = flags&(flagArgsTrunc|flagArgsFault) != 0
	if kind == sensor.KindExit {
		code := int32(le.Uint32(b[48:]))
		ev.ExitSignal = int(code & 0x7f)
		if ev.ExitSignal == 0 {
			ev.ExitCode = int(code>>8) & 0xff
		}
	}
	return nil
}

// encodeDev turns a kernel dev_t (major<<20 | minor) into the st_dev
// encoding of stat(2) (new_encode_dev), so it compares with os.Stat.
func encodeDev(kdev uint32) uint64 {
	major := uint64(kdev >> 20)
	minor := uint64(kdev & (1<<20 - 1))
	return (minor & 0xff) | (major << 8) | ((minor &^ 0xff) << 12)
}

// joinPath rebuilds a path from leaf-first NUL-terminated components. A
// truncated walk did not reach the root, so the result is not absolute.
func joinPath(b []byte, truncated bool) string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		if truncated {
			return ""
		}
		return "/"
	}
	var sb strings.Builder
	sb.Grow(len(b) + 1)
	for first := true; ; first = false {
		i := bytes.LastIndexByte(b, 0)
		if !first || !truncated {
			sb.WriteByte('/')
		}
		sb.Write(b[i+1:])
		if i < 0 {
			return sb.String()
		}
		b = b[:i]
	}
}

// splitArgs splits the NUL-separated argv area. A trailing NUL ends the last
// argument; a missing one means the area was cut.
func splitArgs(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return []string{""}
	}
	return strings.Split(string(b), "\x00")
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
