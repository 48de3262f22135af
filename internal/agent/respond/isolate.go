package respond

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamori-edr/mamori/internal/wire"
)

// Names of the isolation layer.
const (
	// TableName is the nftables table (family inet) Mamori owns.
	TableName = "mamori_isolation"
	// IsolationFile holds the isolation state in the agent's data directory.
	IsolationFile = "isolation.json"
	// LayerNftables names the nftables layer in the reported status.
	LayerNftables = "nftables"
)

// Dest is an address and TCP port that stays reachable while isolated.
type Dest struct {
	Addr netip.Addr
	Port uint16
}

func (d Dest) String() string { return netip.AddrPortFrom(d.Addr, d.Port).String() }

// Isolator cuts the host off the network except the management channel,
// loopback and DNS, with an nftables table applied atomically by nft -f.
type Isolator struct {
	// DataDir holds IsolationFile.
	DataDir string
	// Endpoints returns the URLs the agent uses to reach the server
	// (https://host:port and proxies http://host:port); each is resolved
	// when isolating.
	Endpoints func() []string
	// Resolvers are the DNS servers that stay reachable (port 53); nil
	// reads the nameserver lines of /etc/resolv.conf.
	Resolvers []netip.Addr
	// NFT is the command that runs nft; default {"nft"}. Tests prefix it
	// with "ip netns exec NAME".
	NFT []string

	mu  sync.Mutex
	err string // last apply error, reported in Status
}

// isolationState is what IsolationFile holds.
type isolationState struct {
	Isolated  bool     `json:"isolated"`
	Since     string   `json:"since,omitempty"`
	Allowed   []string `json:"allowed,omitempty"`   // addr:port
	Resolvers []string `json:"resolvers,omitempty"` // addr
}

// Ruleset returns the nftables script that (re)creates the isolation table
// atomically: everything in or out is dropped except loopback, TCP to the
// allowed destinations (and its established replies), DNS to the resolvers
// and IPv6 neighbour discovery.
func Ruleset(allow []Dest, resolvers []netip.Addr) string {
	var b strings.Builder
	fam := func(a netip.Addr) string {
		if a.Is4() {
			return "ip"
		}
		return "ip6"
	}
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\ntable inet %s {\n", TableName, TableName, TableName)
	nd := "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept\n"
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter - 10; policy drop;\n\t\tiif \"lo\" accept\n")
	b.WriteString(nd)
	for _, d := range allow {
		fmt.Fprintf(&b, "\t\t%s saddr %s tcp sport %d ct state established accept\n", fam(d.Addr), d.Addr, d.Port)
	}
	for _, r := range resolvers {
		fmt.Fprintf(&b, "\t\t%s saddr %s udp sport 53 ct state established accept\n", fam(r), r)
		fmt.Fprintf(&b, "\t\t%s saddr %s tcp sport 53 ct state established accept\n", fam(r), r)
	}
	b.WriteString("\t}\n\tchain output {\n\t\ttype filter hook output priority filter - 10; policy drop;\n\t\toif \"lo\" accept\n")
	b.WriteString(nd)
	for _, d := range allow {
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport %d accept\n", fam(d.Addr), d.Addr, d.Port)
	}
	for _, r := range resolvers {
		fmt.Fprintf(&b, "\t\t%s daddr %s udp dport 53 accept\n", fam(r), r)
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport 53 accept\n", fam(r), r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// releaseScript deletes the table whether or not it exists, in one transaction.
func releaseScript() string {
	return fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", TableName, TableName)
}

// ParseEndpoint returns the host and port of an endpoint URL, with the
// scheme's default port.
func ParseEndpoint(raw string) (host string, port uint16, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0, fmt.Errorf("endpoint %q: %w", raw, err)
	}
	if u.Hostname() == "" {
		return "", 0, fmt.Errorf("endpoint %q: no host", raw)
	}
	p := u.Port()
	if p == "" {
		switch u.Scheme {
		case "https":
			p = "443"
		case "http":
			p = "80"
		default:
			return "", 0, fmt.Errorf("endpoint %q: no port and unknown scheme", raw)
		}
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("endpoint %q: bad port %q", raw, p)
	}
	return u.Hostname(), uint16(n), nil
}

// ParseResolvConf returns the nameserver addresses of a resolv.conf.
func ParseResolvConf(b []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			// Zone-scoped link-local resolvers (fe80::1%eth0) keep their address only.
			a, err := netip.ParseAddr(strings.SplitN(f[1], "%", 2)[0])
			if err == nil && !slices.Contains(out, a) {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

func (i *Isolator) resolvers() []netip.Addr {
	if i.Resolvers != nil {
		return i.Resolvers
	}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	return ParseResolvConf(b)
}

// resolve turns the endpoint URLs into addresses and ports.
func (i *Isolator) resolve(ctx context.Context) ([]Dest, error) {
	if i.Endpoints == nil {
		return nil, errors.New("isolate: no endpoints to keep reachable")
	}
	var out []Dest
	var errs []error
	for _, ep := range i.Endpoints() {
		host, port, err := ParseEndpoint(ep)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", host, err))
			continue
		}
		for _, a := range addrs {
			d := Dest{Addr: a.Unmap(), Port: port}
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	if len(out) == 0 {
		// Isolating without a way back to the server would strand the host.
		return nil, fmt.Errorf("isolate: no server address resolved: %w", errors.Join(errs...))
	}
	return out, nil
}

func (i *Isolator) nft(ctx context.Context, script string) error {
	argv := i.NFT
	if len(argv) == 0 {
		argv = []string{"nft"}
	}
	argv = append(slices.Clone(argv), "-f", "-")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (i *Isolator) load() (isolationState, error) {
	var st isolationState
	b, err := os.ReadFile(filepath.Join(i.DataDir, IsolationFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("isolation state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("isolation state %s: %w", IsolationFile, err)
	}
	return st, nil
}

func (i *Isolator) save(st isolationState) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(i.DataDir, IsolationFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("isolation state: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("isolation state: %w", err)
	}
	if d, err := os.Open(i.DataDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (i *Isolator) setErr(err error) error {
	i.err = ""
	if err != nil {
		i.err = err.Error()
	}
	return err
}

// Isolate resolves the endpoints, records the intent in the data directory,
// then applies the table. Isolating an isolated host refreshes the rules.
func (i *Isolator) Isolate(ctx context.Context) (wire.IsolationStatus, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	allow, err := i.resolve(ctx)
	if err != nil {
		return i.status(), i.setErr(err)
	}
	res := i.resolvers()
	st := isolationState{Isolated: true, Since: time.Now().UTC().Format(time.RFC3339)}
	if old, err := i.load(); err == nil && old.Isolated && old.Since != "" {
		st.Since = old.Since
	}
	for _, d := range allow {
		st.Allowed = append(st.Allowed, d.String())
	}
	for _, r := range res {
		st.Resolvers = append(st.Resolvers, r.String())
	}
	// Intent first: a crash after this re-applies isolation at start.
	if err := i.save(st); err != nil {
		return i.status(), i.setErr(err)
	}
	if err := i.nft(ctx, Ruleset(allow, res)); err != nil {
		if serr := i.save(isolationState{}); serr != nil {
			err = errors.Join(err, serr)
		}
		return i.status(), i.setErr(fmt.Errorf("isolate: %w", err))
	}
	i.setErr(nil)
	return i.status(), nil
}

// Release records the release, then deletes the table (a crash in between
// leaves a table that Restore removes).
func (i *Isolator) Release(ctx context.Context) (wire.IsolationStatus, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.save(isolationState{}); err != nil {
		return i.status(), i.setErr(err)
	}
	if err := i.nft(ctx, releaseScript()); err != nil {
		return i.status(), i.setErr(fmt.Errorf("release: %w", err))
	}
	i.setErr(nil)
	return i.status(), nil
}

// Restore makes the kernel match the recorded state when the agent starts:
// re-applies the table of an isolated host (with the addresses recorded at
// isolation, plus any resolved now) and removes a leftover one otherwise.
func (i *Isolator) Restore(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	st, err := i.load()
	if err != nil {
		// An unreadable state file must not silently un-isolate a host.
		return i.setErr(err)
	}
	if !st.Isolated {
		err := i.nft(ctx, releaseScript())
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			err = nil // no nft, so no table to remove
		}
		return i.setErr(err)
	}
	var allow []Dest
	for _, s := range st.Allowed {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			allow = append(allow, Dest{Addr: ap.Addr(), Port: ap.Port()})
		}
	}
	if now, err := i.resolve(ctx); err == nil {
		for _, d := range now {
			if !slices.Contains(allow, d) {
				allow = append(allow, d)
			}
		}
	}
	var res []netip.Addr
	for _, s := range st.Resolvers {
		if a, err := netip.ParseAddr(s); err == nil {
			res = append(res, a)
		}
	}
	if err := i.nft(ctx, Ruleset(allow, res)); err != nil {
		return i.setErr(fmt.Errorf("re-apply isolation: %w", err))
	}
	return i.setErr(nil)
}

// Status reports the recorded isolation state and the last error.
func (i *Isolator) Status() wire.IsolationStatus {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.status()
}

func (i *Isolator) status() wire.IsolationStatus {
	st, err := i.load()
	out := wire.IsolationStatus{Isolated: st.Isolated, Since: st.Since, Allowed: st.Allowed, Error: i.err}
	if err != nil && out.Error == "" {
		out.Error = err.Error()
	}
	if st.Isolated && i.err == "" {
		out.Layers = []string{LayerNftables}
	}
	return out
}
