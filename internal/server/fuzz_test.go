package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/mamori-edr/mamori/internal/wire"
)

// FuzzDecodeBatch checks the batch decoder never panics, reports every
// failure as an *apiError with a 4xx status, and stamps what it accepts.
func FuzzDecodeBatch(f *testing.F) {
	good, _ := json.Marshal(wire.Batch{BootID: "b", Records: nExecs(1, 2)})
	f.Add(good, false)
	f.Add(gz(good), true)
	f.Add([]byte(`{"records":[{"seq":1,"event":{"schema":1,"type":"agent_loss","time":"2024-01-01T00:00:00Z","loss":{}}}]}`), false)
	f.Add([]byte(`{"records":[{"seq":2},{"seq":1}]}`), false)
	f.Add([]byte(`{"records":[{"seq":1,"event":null}]}`), false)
	f.Add(gz(good)[:20], true)
	f.Add([]byte("\x1f\x8b\x08\x00"), true)
	f.Add([]byte(`{}{}`), false)
	f.Fuzz(func(t *testing.T, body []byte, gzipped bool) {
		enc := ""
		if gzipped {
			enc = "gzip"
		}
		b, evs, err := DecodeBatch(bytes.NewReader(body), enc, "t", "h")
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 || ae.code == "" {
				t.Fatalf("error %v is not a coded 4xx", err)
			}
			return
		}
		if len(evs) != len(b.Records) {
			t.Fatalf("%d events from %d records", len(evs), len(b.Records))
		}
		for i, ev := range evs {
			if ev.Tenant != "t" || ev.HostID != "h" || ev.Seq != b.Records[i].Seq || (i > 0 && ev.Seq <= evs[i-1].Seq) {
				t.Fatalf("event %d badly stamped or ordered: %+v", i, ev)
			}
		}
	})
}
