package spool

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAppend measures single-record appends of a typical 512-byte event
// with the production sync interval and with an fsync per Append.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name  string
		sync  time.Duration
		batch int
	}{
		{"sync=1s/batch=1", time.Second, 1},
		{"sync=1s/batch=64", time.Second, 64},
		{"sync=0/batch=1", 0, 1},
		{"sync=0/batch=64", 0, 64},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := mustOpen(b, b.TempDir(), Options{SyncInterval: tc.sync, MaxBytes: 256 << 20})
			defer s.Close()
			p := []byte(fmt.Sprintf(`{"schema":1,"type":"process_exec","pad":"%0480d"}`, 0))
			batch := make([][]byte, tc.batch)
			for i := range batch {
				batch[i] = p
			}
			b.SetBytes(int64(len(p) * tc.batch))
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Append(batch...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*tc.batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkRead measures reading batches of 500 records from a full spool.
func BenchmarkRead(b *testing.B) {
	s := mustOpen(b, b.TempDir(), Options{SyncInterval: time.Hour})
	defer s.Close()
	p := []byte(fmt.Sprintf(`{"pad":"%0500d"}`, 0))
	for range 20000 {
		if _, err := s.Append(p); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var after uint64
	n := 0
	for b.Loop() {
		recs, err := s.Read(after, 500, 0)
		if err != nil {
			b.Fatal(err)
		}
		n += len(recs)
		if after += 500; after >= 19500 {
			after = 0
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
