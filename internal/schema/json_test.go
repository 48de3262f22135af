package schema

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// fill sets every exported field of v (recursively) to a random value, so a
// field added to the schema is exercised without anyone listing it here.
func fill(r *rand.Rand, v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		if r.IntN(5) == 0 || depth > 6 {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(r, v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(r.Int64N(4e9), r.Int64N(1e9)).In(time.FixedZone("z", 3600*(r.IntN(25)-12)))))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(r, v.Field(i), depth+1)
			}
		}
	case reflect.String:
		v.SetString(randString(r))
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if r.IntN(4) == 0 {
			return
		}
		v.SetInt(r.Int64() >> (r.IntN(64)))
		if r.IntN(2) == 0 {
			v.SetInt(-v.Int())
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if r.IntN(4) == 0 {
			return
		}
		v.SetUint(r.Uint64() >> (r.IntN(64)))
	case reflect.Slice:
		n := r.IntN(4)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fill(r, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := r.IntN(3); i > 0; i-- {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(r, k, depth+1)
			fill(r, e, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	}
}

func randString(r *rand.Rand) string {
	pieces := []string{"", "a", "/usr/bin/true", "ü", "日本", "<script>&", "\"q\"", "\\", "\n\t\r\b\f", "\x00\x1f\x7f",
		"\u2028\u2029", "\xff\xfe", "\xe2\x82", "🙂", " ", "--flag=value"}
	var b []byte
	for i := r.IntN(5); i > 0; i-- {
		b = append(b, pieces[r.IntN(len(pieces))]...)
	}
	return string(b)
}

func TestAppendJSONMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		var ev Event
		fill(r, reflect.ValueOf(&ev).Elem(), 0)
		want, err := json.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		got := ev.AppendJSON(nil)
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func TestAppendJSONOutOfRangeYear(t *testing.T) {
	ev := Event{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if got := string(ev.AppendJSON([]byte("x"))); got != "xnull" {
		t.Errorf("got %s", got)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	ec := 0
	ev := Event{Schema: 1, BootID: "872a9a35-4839-448a-89e8-eb8003fccdb4", Time: time.Now(), Type: ProcessExec,
		Process: &Process{EntityID: "872a9a35-4839-448a-89e8-eb8003fccdb4:1234:5678", PID: 1234, PPID: 1, ParentEntityID: "872a9a35-4839-448a-89e8-eb8003fccdb4:1:25",
			StartTime: time.Now(), Name: "true", Exe: "/usr/bin/true", Args: []string{"/usr/bin/true", "arg"}, Cwd: "/tmp", User: "root", LoginUID: 4294967295,
			CgroupID: 123, CgroupPath: "/user.slice/user-0.slice/session-1.scope", Hash: &FileHash{SHA256: "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447", MD5: "d41d8cd98f00b204e9800998ecf8427e", Size: 39000, Status: "ok"}, ExitCode: &ec},
		Parent: &Ancestor{EntityID: "872a9a35-4839-448a-89e8-eb8003fccdb4:1:25", PID: 1, Exe: "/bin/sh", Args: []string{"sh", "-c", "loop"}}}
	b.Run("AppendJSON", func(b *testing.B) {
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf = ev.AppendJSON(buf[:0])
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			json.Marshal(&ev)
		}
	})
}
