package transport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		spec, url, proxy, err string
	}{
		{spec: "https://s:8443", url: "https://s:8443"},
		{spec: "direct:https://s:8443", url: "https://s:8443"},
		{spec: "proxy:http://u:p@px:3128@https://s:8443", url: "https://s:8443", proxy: "http://u:p@px:3128"},
		{spec: "proxy:http://u:p%40x@px:3128@https://s:8443", url: "https://s:8443", proxy: "http://u:p%40x@px:3128"},
		{spec: "proxy:http://px:3128@https://s", url: "https://s", proxy: "http://px:3128"},
		{spec: "", err: "want direct:"},
		{spec: "http://s:80", err: "want direct:"},
		{spec: "direct:http://s:80", err: "scheme must be https"},
		{spec: "proxy:http://px:3128", err: "proxy form"},
		{spec: "proxy:http://px@https://s", err: "host:port"},
		{spec: "proxy:socks5://px:1080@https://s", err: "want http"},
		{spec: "proxy:http://px:3128/path@https://s", err: "no path"},
		{spec: "direct:https://user:pw@s:8443", err: "must not carry credentials"},
		{spec: "proxy:http://u:sec ret@px:3128@https://s", err: "does not parse"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			ep, err := ParseEndpoint(tc.spec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "sec ret") {
					t.Fatalf("error echoes the password: %v", err)
				}
				return
			}
			if err != nil || ep.URL != tc.url || ep.Proxy != tc.proxy {
				t.Fatalf("got %+v %v", ep, err)
			}
			if strings.Contains(ep.String(), ":p@") {
				t.Fatalf("String() shows credentials: %s", ep)
			}
		})
	}
}

func TestEndpointsFile(t *testing.T) {
	dir := t.TempDir()
	eps := []Endpoint{{URL: "https://s:8443"}, {URL: "https://s:8443", Proxy: "http://u:p@px:3128"}}
	if err := SaveEndpoints(dir, eps); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, EndpointsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("endpoints file mode %v %v, want 0600", fi.Mode(), err)
	}
	got, err := LoadEndpoints(dir)
	if err != nil || len(got) != 2 || got[1] != eps[1] {
		t.Fatalf("load: %+v %v", got, err)
	}
	if got, err := LoadEndpoints(t.TempDir()); err != nil || got != nil {
		t.Fatalf("missing file: %+v %v", got, err)
	}
	if err := SaveEndpoints(dir, []Endpoint{{URL: "http://x"}}); err == nil {
		t.Fatal("saved a non-TLS endpoint")
	}
	for name, body := range map[string]string{
		"not json":   "{",
		"bad scheme": `{"endpoints":[{"url":"http://s"}]}`,
		"bad proxy":  `{"endpoints":[{"url":"https://s","proxy":"ftp://p:1"}]}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, EndpointsFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadEndpoints(dir); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"https://s:8443", "direct:https://s:8443", "proxy:http://u:p@px:3128@https://s:8443",
		"proxy:http://@@https://@https://", "proxy:http://u:%zz@p:1@https://s", "direct:", "proxy:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ep, err := ParseEndpoint(spec)
		if err != nil {
			return
		}
		if ep.validate() != nil {
			t.Fatalf("accepted %q into invalid %+v", spec, ep)
		}
		// The redacted name never carries the proxy password.
		if p, err := parseProxyURL(ep.Proxy); err == nil && p.User != nil {
			if pw, ok := p.User.Password(); ok && len(pw) > 3 && strings.Contains(ep.String(), pw) && !strings.Contains(ep.URL, pw) && !strings.Contains(p.Host, pw) {
				t.Fatalf("String() %q shows password", ep)
			}
		}
	})
}

func TestPageText(t *testing.T) {
	got := pageText([]byte("<html><head><title>407</title></head>\n<body><h1>Auth\x00 needed</h1></body></html>"))
	if got != "407 Auth needed" {
		t.Fatalf("pageText = %q", got)
	}
	if r := []rune(pageText([]byte(strings.Repeat("é", 500)))); len(r) != 201 {
		t.Fatalf("not cut at 200 runes: %d", len(r))
	}
}
