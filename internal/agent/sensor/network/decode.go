package network

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Layout of struct net_event in bpf/network.c; decode_test checks it against
// the bpf2go twin.
const (
	recSize = 104

	afInet  = 2
	afInet6 = 10

	resultFailed = 1
)

// Decode errors.
var (
	errSize   = errors.New("record size differs from struct net_event")
	errKind   = errors.New("unknown event kind")
	errFamily = errors.New("unknown address family")
)

// decode parses one ring-buffer record into ev; nothing refers to b after
// it returns (the ring memory is reused).
func decode(b []byte, ev *Event) error {
	if len(b) < recSize {
		return fmt.Errorf("decode: %w: %d < %d bytes", errSize, len(b), recSize)
	}
	le := binary.LittleEndian
	kind := Kind(b[0])
	if kind < KindConnect || kind > KindListen {
		return fmt.Errorf("decode: %w %d", errKind, kind)
	}
	var src, dst netip.Addr
	switch b[1] {
	case afInet:
		src = netip.AddrFrom4([4]byte(b[72:76]))
		dst = netip.AddrFrom4([4]byte(b[88:92]))
	case afInet6:
		src = netip.AddrFrom16([16]byte(b[72:88]))
		dst = netip.AddrFrom16([16]byte(b[88:104]))
	default:
		return fmt.Errorf("decode: %w %d", errFamily, b[1])
	}
	*ev = Event{
		Kind:              kind,
		Protocol:          b[2],
		Failed:            b[3] == resultFailed,
		Src:               netip.AddrPortFrom(src, le.Uint16(b[4:])),
		Dst:               netip.AddrPortFrom(dst, le.Uint16(b[6:])),
		BootNs:            le.Uint64(b[8:]),
		PID:               le.Uint32(b[16:]),
		TID:               le.Uint32(b[20:]),
		PPID:              le.Uint32(b[24:]),
		UID:               le.Uint32(b[28:]),
		StartBootNs:       le.Uint64(b[32:]),
		ParentStartBootNs: le.Uint64(b[40:]),
		CgroupID:          le.Uint64(b[48:]),
		Comm:              cString(b[56:72]),
		Count:             1,
	}
	if kind == KindListen {
		ev.Src = netip.AddrPort{}
	}
	return nil
}

// flowEvent turns a finished dedup window into a summary event.
func flowEvent(k *networkFlowKey, v *networkFlowVal) (Event, error) {
	kind := Kind(k.Kind)
	if kind != KindConnect && kind != KindAccept {
		return Event{}, fmt.Errorf("flow: %w %d", errKind, kind)
	}
	var client, server netip.Addr
	switch k.Family {
	case afInet:
		client = netip.AddrFrom4([4]byte(k.Caddr[:4]))
		server = netip.AddrFrom4([4]byte(k.Saddr[:4]))
	case afInet6:
		client = netip.AddrFrom16(k.Caddr)
		server = netip.AddrFrom16(k.Saddr)
	default:
		return Event{}, fmt.Errorf("flow: %w %d", errFamily, k.Family)
	}
	ev := Event{
		Kind: kind, Protocol: protoTCP, Failed: k.Result == resultFailed,
		BootNs: v.Last, FirstBootNs: v.First,
		PID: k.Pid, StartBootNs: k.Start,
		Count: v.Count, Summary: true,
		Src: netip.AddrPortFrom(client, 0), Dst: netip.AddrPortFrom(server, k.Port),
	}
	return ev, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
