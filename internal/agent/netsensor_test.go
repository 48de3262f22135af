package agent

import (
	"net/netip"
	"testing"

	"github.com/mamori-edr/mamori/internal/agent/sensor/network"
	"github.com/mamori-edr/mamori/internal/schema"
)

func TestNetSchemaEvent(t *testing.T) {
	v4c := netip.MustParseAddrPort("127.0.0.1:40000")
	v4s := netip.MustParseAddrPort("127.0.0.1:8080")
	v6s := netip.MustParseAddrPort("[::1]:22")
	for _, tc := range []struct {
		name string
		ev   network.Event
		typ  schema.EventType
		want schema.Network
	}{
		{"connect", network.Event{Kind: network.KindConnect, Protocol: 6, Src: v4c, Dst: v4s, Count: 1}, schema.NetworkConnect,
			schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "outbound", Result: "established",
				SrcIP: "127.0.0.1", SrcPort: 40000, DstIP: "127.0.0.1", DstPort: 8080, Count: 1}},
		{"failed connect", network.Event{Kind: network.KindConnect, Protocol: 6, Failed: true, Src: v4c, Dst: v4s, Count: 1}, schema.NetworkConnect,
			schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "outbound", Result: "failed",
				SrcIP: "127.0.0.1", SrcPort: 40000, DstIP: "127.0.0.1", DstPort: 8080, Count: 1}},
		{"accept ipv6", network.Event{Kind: network.KindAccept, Protocol: 6, Src: netip.MustParseAddrPort("[::1]:5000"), Dst: v6s, Count: 1}, schema.NetworkAccept,
			schema.Network{Family: "ipv6", Protocol: "tcp", Direction: "inbound", SrcIP: "::1", SrcPort: 5000, DstIP: "::1", DstPort: 22, Count: 1}},
		{"listen", network.Event{Kind: network.KindListen, Protocol: 6, Dst: v6s, Count: 1}, schema.NetworkListen,
			schema.Network{Family: "ipv6", Protocol: "tcp", Direction: "listen", DstIP: "::1", DstPort: 22, Count: 1}},
		{"summary", network.Event{Kind: network.KindConnect, Protocol: 6, Dst: v4s, Count: 41, Summary: true, FirstBootNs: 1}, schema.NetworkConnect,
			schema.Network{Family: "ipv4", Protocol: "tcp", Direction: "outbound", Result: "established",
				DstIP: "127.0.0.1", DstPort: 8080, Count: 41, Summary: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := netSchemaEvent("boot", tc.ev)
			if got.Type != tc.typ || got.Network == nil || got.BootID != "boot" {
				t.Fatalf("event %+v, want type %s with a network part", got, tc.typ)
			}
			n := *got.Network
			if tc.ev.Summary {
				if n.FirstTime == "" {
					t.Errorf("summary without first_time")
				}
				n.FirstTime = ""
			}
			if n != tc.want {
				t.Errorf("network:\n got %+v\nwant %+v", n, tc.want)
			}
		})
	}
}
