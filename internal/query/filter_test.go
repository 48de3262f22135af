package query

import (
	"errors"
	"testing"

	"github.com/mamori-edr/mamori/internal/store"
)

func TestParseCondition(t *testing.T) {
	tests := []struct {
		in   string
		want store.Condition
		err  bool
	}{
		{in: "process.name=bash", want: store.Condition{Field: "process.name", Op: store.OpEq, Value: "bash"}},
		{in: "process.args~curl http", want: store.Condition{Field: "process.args", Op: store.OpContains, Value: "curl http"}},
		{in: "process.exe^=/tmp/", want: store.Condition{Field: "process.exe", Op: store.OpPrefix, Value: "/tmp/"}},
		{in: "process.exe$=.sh", want: store.Condition{Field: "process.exe", Op: store.OpSuffix, Value: ".sh"}},
		{in: "process.uid!=0", want: store.Condition{Field: "process.uid", Op: store.OpNe, Value: "0"}},
		{in: "process.pid>100", want: store.Condition{Field: "process.pid", Op: store.OpGt, Value: "100"}},
		{in: "process.exit_code<-1", want: store.Condition{Field: "process.exit_code", Op: store.OpLt, Value: "-1"}},
		{in: "process.args~a=b", want: store.Condition{Field: "process.args", Op: store.OpContains, Value: "a=b"}},
		{in: "process.args=%' OR 1=1 --", want: store.Condition{Field: "process.args", Op: store.OpEq, Value: "%' OR 1=1 --"}},
		{in: "nosuch=1", err: true},
		{in: "process.name", err: true},
		{in: "=x", err: true},
		{in: "process.pid~1", err: true},
		{in: "process.pid=abc", err: true},
		{in: "process.pid=99999999999999999999", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCondition(tt.in)
			if tt.err {
				if !errors.Is(err, store.ErrBadQuery) {
					t.Fatalf("err = %v, want ErrBadQuery", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if back, err := ParseCondition(FormatCondition(got)); err != nil || back != got {
				t.Fatalf("round trip: %+v, %v", back, err)
			}
		})
	}
}

func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"process.name=bash", "process.args~x", "process.pid>1", "a!=b", "$=^=~"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			return
		}
		if _, ok := store.QueryFields[c.Field]; !ok {
			t.Fatalf("accepted unknown field %q", c.Field)
		}
	})
}
