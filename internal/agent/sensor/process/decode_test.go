package process

import (
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
)

// record builds a ring record the way bpf/process.c lays it out.
func record(kind sensor.Kind, flags uint8, exe, cwd, args string, exitCode int32) []byte {
	b := make([]byte, hdrSize, hdrSize+len(exe)+len(cwd)+len(args))
	le := binary.LittleEndian
	b[0], b[1] = byte(kind), flags
	le.PutUint16(b[2:], uint16(len(exe)))
	le.PutUint16(b[4:], uint16(len(cwd)))
	le.PutUint32(b[8:], uint32(len(args)))
	le.PutUint32(b[12:], 100) // pid
	le.PutUint32(b[16:], 101) // tid
	le.PutUint32(b[20:], 1)   // ppid
	le.PutUint32(b[24:], 1000)
	le.PutUint32(b[48:], uint32(exitCode))
	le.PutUint32(b[52:], 8<<20|1) // dev 8:1
	le.PutUint64(b[64:], 5555)
	le.PutUint64(b[88:], 42)
	copy(b[120:], "bash")
	b = append(b, exe...)
	b = append(b, cwd...)
	return append(b, args...)
}

func TestHeaderLayoutMatchesC(t *testing.T) {
	if n := binary.Size(processEventHdr{}); n != hdrSize {
		t.Fatalf("struct event_hdr is %d bytes, decode assumes %d", n, hdrSize)
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want sensor.ProcessEvent
	}{
		{
			name: "exec",
			in:   record(sensor.KindExec, flagExe|flagCwd, "bash\x00bin\x00usr\x00", "tmp\x00", "bash\x00-c\x00echo hi\x00", 0),
			want: sensor.ProcessEvent{Kind: sensor.KindExec, PID: 100, TID: 101, PPID: 1, UID: 1000, StartBootNs: 5555,
				Comm: "bash", Exe: "/usr/bin/bash", Cwd: "/tmp", Args: []string{"bash", "-c", "echo hi"},
				ExeDev: 0x801, ExeIno: 42},
		},
		{
			name: "root cwd, truncated exe, cut argv",
			in:   record(sensor.KindExec, flagExe|flagExeTrunc|flagCwd|flagArgsTrunc, "x\x00deep\x00", "", "a\x00bc", 0),
			want: sensor.ProcessEvent{Kind: sensor.KindExec, PID: 100, TID: 101, PPID: 1, UID: 1000, StartBootNs: 5555,
				Comm: "bash", Exe: "deep/x", Cwd: "/", Args: []string{"a", "bc"}, ArgsTruncated: true,
				ExeDev: 0x801, ExeIno: 42},
		},
		{
			name: "argv unreadable",
			in:   record(sensor.KindFork, flagArgsFault, "", "", "", 0),
			want: sensor.ProcessEvent{Kind: sensor.KindFork, PID: 100, TID: 101, PPID: 1, UID: 1000, StartBootNs: 5555,
				Comm: "bash", ArgsTruncated: true},
		},
		{
			name: "exit 7",
			in:   record(sensor.KindExit, 0, "", "", "", 7<<8),
			want: sensor.ProcessEvent{Kind: sensor.KindExit, PID: 100, TID: 101, PPID: 1, UID: 1000, StartBootNs: 5555,
				Comm: "bash", ExitCode: 7},
		},
		{
			name: "killed, core dumped",
			in:   record(sensor.KindExit, 0, "", "", "", 0x80|11),
			want: sensor.ProcessEvent{Kind: sensor.KindExit, PID: 100, TID: 101, PPID: 1, UID: 1000, StartBootNs: 5555,
				Comm: "bash", ExitSignal: 11},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got sensor.ProcessEvent
			if err := decode(tc.in, &got); err != nil {
				t.Fatal(err)
			}
			if !equalEvent(got, tc.want) {
				t.Errorf("decode =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func equalEvent(a, b sensor.ProcessEvent) bool {
	return slices.Equal(a.Args, b.Args) && reflect.DeepEqual(withoutArgs(a), withoutArgs(b))
}

func withoutArgs(e sensor.ProcessEvent) sensor.ProcessEvent {
	e.Args = nil
	return e
}

func TestDecodeRejectsHostileRecords(t *testing.T) {
	good := record(sensor.KindExec, flagExe|flagCwd, "a\x00", "b\x00", "c\x00", 0)
	oversized := slices.Clone(good)
	binary.LittleEndian.PutUint32(oversized[8:], 0xffffffff)
	lyingExe := slices.Clone(good)
	binary.LittleEndian.PutUint16(lyingExe[2:], 0xffff)
	badKind := slices.Clone(good)
	badKind[0] = 9
	zeroKind := slices.Clone(good)
	zeroKind[0] = 0
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errShort},
		{"short header", good[:hdrSize-1], errShort},
		{"tail cut", good[:len(good)-1], errTail},
		{"args length overflows", oversized, errTail},
		{"exe length lies", lyingExe, errTail},
		{"unknown kind", badKind, errKind},
		{"zero kind", zeroKind, errKind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev sensor.ProcessEvent
			if err := decode(tc.in, &ev); !errors.Is(err, tc.want) {
				t.Errorf("decode = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestEncodeDevMatchesStat checks encodeDev against the st_dev encoding
// that unix.Mkdev (glibc's makedev) produces.
func TestEncodeDevMatchesStat(t *testing.T) {
	for _, tc := range []struct{ major, minor uint32 }{
		{8, 1}, {254, 0}, {0, 300}, {259, 70000}, {4095, 1<<20 - 1},
	} {
		if got, want := encodeDev(tc.major<<20|tc.minor), unix.Mkdev(tc.major, tc.minor); got != want {
			t.Errorf("encodeDev(%d:%d) = %#x, want %#x", tc.major, tc.minor, got, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(record(sensor.KindExec, flagExe|flagCwd, "true\x00bin\x00", "tmp\x00", "true\x00x\x00", 0))
	f.Add(record(sensor.KindExit, 0, "", "", "", 0x8b))
	f.Add(record(sensor.KindFork, flagExe|flagExeTrunc|flagArgsFault, "\x00\x00", "", "", 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev sensor.ProcessEvent
		if err := decode(b, &ev); err != nil {
			return
		}
		if ev.Kind < sensor.KindExec || ev.Kind > sensor.KindExit {
			t.Fatalf("accepted kind %d", ev.Kind)
		}
		if ev.ExitSignal < 0 || ev.ExitSignal > 0x7f || ev.ExitCode < 0 || ev.ExitCode > 255 {
			t.Fatalf("exit code %d signal %d out of range", ev.ExitCode, ev.ExitSignal)
		}
		if b[1]&flagExe != 0 && b[1]&flagExeTrunc == 0 && (len(ev.Exe) == 0 || ev.Exe[0] != '/') {
			t.Fatalf("complete exe path %q is not absolute", ev.Exe)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	rec := record(sensor.KindExec, flagExe|flagCwd, "true\x00bin\x00usr\x00", "process\x00sensor\x00agent\x00internal\x00main\x00work\x00",
		"/bin/sh\x00-c\x00i=0; while [ $i -lt 5000 ]; do /bin/true; i=$((i+1)); done\x00", 0)
	var ev sensor.ProcessEvent
	b.ReportAllocs()
	for b.Loop() {
		if err := decode(rec, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
