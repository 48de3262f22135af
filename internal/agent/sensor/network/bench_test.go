package network

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
)

// BenchmarkLoopbackConnect measures a loopback connect+accept+close with and
// without the sensor attached, and how many events the sensor delivered per
// connect (dedup: close to 0). Run: go test -run ^$ -bench Loopback -benchtime 20000x
func BenchmarkLoopbackConnect(b *testing.B) {
	for _, mode := range []string{"no-sensor", "sensor", "sensor-nodedup"} {
		b.Run(mode, func(b *testing.B) {
			var events atomic.Uint64
			if mode != "no-sensor" {
				s := openSensor(b, Options{NoDedup: mode == "sensor-nodedup"})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- s.Run(ctx, func(Event) { events.Add(1) }) }()
				defer func() { cancel(); <-done }()
			}
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			addr := ln.Addr().String()
			b.ResetTimer()
			for range b.N {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.StopTimer()
			b.ReportMetric(float64(events.Load())/float64(b.N), "events/op")
		})
	}
}
