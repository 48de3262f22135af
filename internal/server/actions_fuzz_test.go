package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/wire"
)

// FuzzCheckActionParams: params are refused with a 400 or normalised into
// JSON that decodes back to a kill of a valid entity.
func FuzzCheckActionParams(f *testing.F) {
	for _, s := range []struct{ typ, params string }{
		{"kill", `{"entity_id":"b:100:5","tree":true}`},
		{"kill", `{"entity_id":"b:1:5"}`},
		{"kill", `{"entity_id":"::"}`},
		{"kill", `{"entity_id":"b:100:5"} trailing`},
		{"isolate", `{}`},
		{"isolate", `null`},
		{"release", `{"a":1}`},
		{"shell", ``},
	} {
		f.Add(s.typ, []byte(s.params))
	}
	f.Fuzz(func(t *testing.T, typ string, raw []byte) {
		out, err := checkActionParams(typ, json.RawMessage(raw))
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if !json.Valid([]byte(out)) {
			t.Fatalf("normalised params %q are not JSON", out)
		}
		if typ == wire.ActionKill {
			var p wire.KillParams
			if err := json.Unmarshal([]byte(out), &p); err != nil {
				t.Fatal(err)
			}
			if _, pid, _, err := schema.ParseEntityID(p.EntityID); err != nil || pid <= 1 {
				t.Fatalf("accepted entity %q (pid %d, %v)", p.EntityID, pid, err)
			}
		}
	})
}

func TestCheckActionParams(t *testing.T) {
	for _, tc := range []struct {
		typ, params, want string
	}{
		{"kill", `{"entity_id":"b:100:5","tree":true}`, `{"entity_id":"b:100:5","tree":true}`},
		{"kill", ` {"tree":false,"entity_id":"b:100:5"} `, `{"entity_id":"b:100:5"}`},
		{"kill", `{"entity_id":"b:100:5"} {}`, ""},
		{"kill", `{"entity_id":"b:100:5"} trailing`, ""},
		{"kill", `[]`, ""},
		{"kill", `{"entity_id":"b:0:5"}`, ""},
		{"kill", `{"entity_id":"b:4294967296:5"}`, ""},
		{"isolate", ``, `{}`},
		{"isolate", `null`, `{}`},
		{"release", ` {} `, `{}`},
		{"release", `[]`, ""},
		{"", `{}`, ""},
	} {
		got, err := checkActionParams(tc.typ, json.RawMessage(tc.params))
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("%s %q: %q %v, want %q", tc.typ, tc.params, got, err, tc.want)
		}
	}
}
