package discovery

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/grandcat/zeroconf"
)

// These tests exercise the parsing and filtering of zeroconf entries
// without any network; the real mDNS test is in netns_test.go.

const (
	idSelf  = "0123456789abcdef0123456789abcdef"
	idPeer  = "fedcba9876543210fedcba9876543210"
	idOther = "11111111111111111111111111111111"
)

func entry(txt []string, port int, v4, v6 []string) *zeroconf.ServiceEntry {
	e := zeroconf.NewServiceEntry("x", Service, mdnsDomain)
	e.Text, e.Port = txt, port
	for _, s := range v4 {
		e.AddrIPv4 = append(e.AddrIPv4, net.ParseIP(s))
	}
	for _, s := range v6 {
		e.AddrIPv6 = append(e.AddrIPv6, net.ParseIP(s))
	}
	return e
}

func TestTXTRoundTrip(t *testing.T) {
	m := MDNS{ID: idSelf, Network: "home", Version: 3, Port: 7000}
	got, err := parseEntry(entry(m.txt(), m.Port, []string{"10.1.2.3"}, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	want := Event{ID: idSelf, Addr: "10.1.2.3:7000", Network: "home", Version: 3, Source: SourceMDNS}
	if got != want {
		t.Fatalf("parseEntry = %+v, want %+v", got, want)
	}
	if strings.Join(m.txt(), " ") != "id="+idSelf+" v=3 net=home" {
		t.Errorf("txt = %q", m.txt())
	}
}

func TestParseEntry(t *testing.T) {
	txt := []string{"id=" + idPeer, "v=1", "net=n", "future=whatever", "flag"}
	for _, tc := range []struct {
		name     string
		e        *zeroconf.ServiceEntry
		zone     string
		wantAddr string // "" means an error is expected
	}{
		{"ipv4 first", entry(txt, 7000, []string{"10.0.0.2", "10.0.0.3"}, []string{"2001:db8::1"}), "", "10.0.0.2:7000"},
		{"global ipv6", entry(txt, 7000, nil, []string{"fe80::1", "2001:db8::1"}), "", "[2001:db8::1]:7000"},
		{"link-local with zone", entry(txt, 7000, nil, []string{"fe80::1"}), "oas0", "[fe80::1%oas0]:7000"},
		{"link-local without zone", entry(txt, 7000, nil, []string{"fe80::1"}), "", ""},
		{"no address", entry(txt, 7000, nil, nil), "", ""},
		{"port zero", entry(txt, 0, []string{"10.0.0.2"}, nil), "", ""},
		{"no id", entry([]string{"v=1", "net=n"}, 7000, []string{"10.0.0.2"}, nil), "", ""},
		{"short id", entry([]string{"id=abc", "v=1", "net=n"}, 7000, []string{"10.0.0.2"}, nil), "", ""},
		{"bad version", entry([]string{"id=" + idPeer, "v=x", "net=n"}, 7000, []string{"10.0.0.2"}, nil), "", ""},
		{"no network", entry([]string{"id=" + idPeer, "v=1"}, 7000, []string{"10.0.0.2"}, nil), "", ""},
		{"empty network", entry([]string{"id=" + idPeer, "v=1", "net="}, 7000, []string{"10.0.0.2"}, nil), "", "10.0.0.2:7000"},
	} {
		ev, err := parseEntry(tc.e, tc.zone)
		switch {
		case tc.wantAddr == "" && err == nil:
			t.Errorf("%s: parseEntry = %+v, want an error", tc.name, ev)
		case tc.wantAddr != "" && err != nil:
			t.Errorf("%s: parseEntry: %v", tc.name, err)
		case tc.wantAddr != "" && ev.Addr != tc.wantAddr:
			t.Errorf("%s: Addr = %q, want %q", tc.name, ev.Addr, tc.wantAddr)
		}
	}
}

func TestPeerFilter(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := newRecorder()
	f := &peerFilter{self: MDNS{ID: idSelf, Network: "home", Version: 2}, log: log, emit: r.emit}
	addr := []string{"10.0.0.9"}
	for range 3 { // repeated sightings: emitted each time, logged once
		f.handle(entry([]string{"id=" + idSelf, "v=2", "net=home"}, 7000, addr, nil))
		f.handle(entry([]string{"id=" + idPeer, "v=2", "net=home"}, 7000, addr, nil))
		f.handle(entry([]string{"id=" + idOther, "v=2", "net=work"}, 7000, addr, nil))
		f.handle(entry([]string{"id=" + idOther, "v=3", "net=home"}, 7000, addr, nil))
		f.handle(entry([]string{"id=zz", "v=2", "net=home"}, 7000, addr, nil))
	}
	evs := r.snapshot()
	if len(evs) != 3 {
		t.Fatalf("emitted %+v, want the peer three times", evs)
	}
	for _, e := range evs {
		if e.ID != idPeer || e.Addr != "10.0.0.9:7000" || e.Network != "home" || e.Version != 2 || e.Source != SourceMDNS || e.Gone {
			t.Errorf("event %+v", e)
		}
	}
	out := logs.String()
	for _, want := range []string{
		"ignoring node of another network",
		"peer " + idOther + " speaks protocol v3, we speak v2",
		"ignoring malformed announcement",
	} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("log has %q %d times, want once:\n%s", want, n, out)
		}
	}
	if strings.Contains(out, idSelf) {
		t.Errorf("own announcement logged:\n%s", out)
	}
}

func TestHostName(t *testing.T) {
	if got := hostName(strings.ToUpper(idSelf)); got != "oashare-"+idSelf+".local." {
		t.Errorf("hostName = %q", got)
	}
}
