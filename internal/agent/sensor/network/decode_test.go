package network

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"unsafe"
)

// encode writes r as the kernel lays it out, through the bpf2go twin.
func encode(t testing.TB, r networkNetEvent) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLayout(t *testing.T) {
	if n := int(unsafe.Sizeof(networkNetEvent{})); n != recSize {
		t.Fatalf("struct net_event is %d bytes, decode assumes %d", n, recSize)
	}
}

func TestDecode(t *testing.T) {
	comm := [16]int8{'c', 'u', 'r', 'l'}
	v4 := networkNetEvent{Kind: 1, Family: afInet, Protocol: 6, Result: 1, Sport: 40000, Dport: 443, Ktime: 99,
		O:     networkOwner{Pid: 10, Tid: 11, Ppid: 1, Uid: 1000, Start: 5, Pstart: 2, Cgroup: 7, Comm: comm},
		Saddr: [16]uint8{10, 0, 0, 1}, Daddr: [16]uint8{192, 0, 2, 1}}
	v6 := v4
	v6.Kind, v6.Family, v6.Result = 2, afInet6, 0
	v6.Saddr = netip.MustParseAddr("2001:db8::1").As16()
	v6.Daddr = netip.MustParseAddr("::1").As16()
	listen := v4
	listen.Kind, listen.Result = 3, 0
	for _, tc := range []struct {
		name string
		rec  networkNetEvent
		want Event
	}{
		{"ipv4 failed connect", v4, Event{Kind: KindConnect, BootNs: 99, Protocol: 6, Failed: true,
			Src: netip.MustParseAddrPort("10.0.0.1:40000"), Dst: netip.MustParseAddrPort("192.0.2.1:443"),
			PID: 10, TID: 11, PPID: 1, UID: 1000, StartBootNs: 5, ParentStartBootNs: 2, CgroupID: 7, Comm: "curl", Count: 1}},
		{"ipv6 accept", v6, Event{Kind: KindAccept, BootNs: 99, Protocol: 6,
			Src: netip.MustParseAddrPort("[2001:db8::1]:40000"), Dst: netip.MustParseAddrPort("[::1]:443"),
			PID: 10, TID: 11, PPID: 1, UID: 1000, StartBootNs: 5, ParentStartBootNs: 2, CgroupID: 7, Comm: "curl", Count: 1}},
		{"listen has no source", listen, Event{Kind: KindListen, BootNs: 99, Protocol: 6,
			Dst: netip.MustParseAddrPort("192.0.2.1:443"),
			PID: 10, TID: 11, PPID: 1, UID: 1000, StartBootNs: 5, ParentStartBootNs: 2, CgroupID: 7, Comm: "curl", Count: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Event
			if err := decode(encode(t, tc.rec), &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("decode:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeHostile(t *testing.T) {
	good := encode(t, networkNetEvent{Kind: 1, Family: afInet})
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errSize},
		{"short", good[:recSize-1], errSize},
		{"kind 0", append([]byte{0}, good[1:]...), errKind},
		{"kind 9", append([]byte{9}, good[1:]...), errKind},
		{"family unix", append([]byte{1, 1}, good[2:]...), errFamily},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			if err := decode(tc.b, &ev); !errors.Is(err, tc.want) {
				t.Errorf("decode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFlowEvent(t *testing.T) {
	k := networkFlowKey{Pid: 3, Kind: 1, Result: 1, Family: afInet6, Start: 8, Port: 80,
		Caddr: netip.MustParseAddr("::2").As16(), Saddr: netip.MustParseAddr("::1").As16()}
	ev, err := flowEvent(&k, &networkFlowVal{First: 1, Last: 2, Count: 41})
	if err != nil {
		t.Fatal(err)
	}
	want := Event{Kind: KindConnect, Protocol: 6, Failed: true, BootNs: 2, FirstBootNs: 1, PID: 3, StartBootNs: 8,
		Count: 41, Summary: true, Src: netip.MustParseAddrPort("[::2]:0"), Dst: netip.MustParseAddrPort("[::1]:80")}
	if ev != want {
		t.Errorf("flowEvent:\n got %+v\nwant %+v", ev, want)
	}
	for _, bad := range []networkFlowKey{{Kind: 3, Family: afInet}, {Kind: 1, Family: 1}} {
		if _, err := flowEvent(&bad, &networkFlowVal{}); err == nil {
			t.Errorf("flowEvent(%+v) succeeded", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(f, networkNetEvent{Kind: 1, Family: afInet, Sport: 1, Dport: 2}))
	f.Add(encode(f, networkNetEvent{Kind: 2, Family: afInet6, Result: 1}))
	f.Add(encode(f, networkNetEvent{Kind: 3, Family: afInet}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := decode(b, &ev); err != nil {
			return
		}
		if ev.Kind < KindConnect || ev.Kind > KindListen || ev.Count != 1 {
			t.Fatalf("decoded an impossible event %+v", ev)
		}
		if !ev.Dst.Addr().IsValid() {
			t.Fatalf("decoded event without a destination %+v", ev)
		}
		if fam := ev.Family(); (fam == "ipv4") != (b[1] == afInet) {
			t.Fatalf("family %s from raw %d", fam, b[1])
		}
	})
}
