package transport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	b := &Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	prevCeil := time.Duration(0)
	for i := range 50 {
		d := b.Next()
		ceil := 30 * time.Second
		if i < 20 {
			ceil = min(100*time.Millisecond<<i, ceil)
		}
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, ceil/2, ceil)
		}
		prevCeil = ceil
	}
	if prevCeil != 30*time.Second {
		t.Fatalf("cap not reached: %v", prevCeil)
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

func TestLoadIdentityHostile(t *testing.T) {
	tests := []struct {
		name, content, msg string
	}{
		{"garbage", "\x00\x01{{", "identity"},
		{"empty object", "{}", "required"},
		{"truncated", `{"host_id":"h","ser`, "identity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadIdentity(dir)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %q", err, tc.msg)
			}
			if _, err := NewClient(dir, ClientOptions{}); err == nil {
				t.Fatal("client built from a bad identity")
			}
		})
	}
}

func FuzzParseServerURL(f *testing.F) {
	for _, s := range []string{"https://127.0.0.1:8443", "10.0.0.1:8443", "http://x", "https://", "https://[::1]:1/p/", "://", "https://h/%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseServerURL(s)
		if err != nil {
			return
		}
		if u.Scheme != "https" || u.Host == "" {
			t.Fatalf("%q accepted as %v", s, u)
		}
		if _, err := parseServerURL(u.String()); err != nil {
			t.Fatalf("%q: re-parse of %q: %v", s, u, err)
		}
	})
}

func FuzzLoadIdentity(f *testing.F) {
	f.Add([]byte(`{"host_id":"h","tenant":"t","server":"https://x:1","ca_pin":"ab"}`))
	f.Add([]byte(`{"host_id":""}`))
	f.Add([]byte("null"))
	f.Add([]byte{0xff, 0xfe})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, IdentityFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		id, err := LoadIdentity(dir)
		if err == nil && (id.HostID == "" || id.Server == "") {
			t.Fatalf("accepted identity without host or server: %+v", id)
		}
	})
}

func FuzzErrorText(f *testing.F) {
	f.Add([]byte(`{"error":"x"}`))
	f.Add([]byte(strings.Repeat("a", 500)))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s := errorText(b); s == "" || len(s) > 1<<20+10 {
			t.Fatalf("errorText(%q) = %q", b, s)
		}
	})
}
