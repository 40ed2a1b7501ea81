package discovery

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder collects emitted Events and lets a test wait for a condition.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) emit(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// waitFor waits until cond holds for the events so far, or fails the test.
func (r *recorder) waitFor(t *testing.T, what string, timeout time.Duration, cond func([]Event) bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if cond(r.snapshot()) {
			return
		}
		select {
		case <-r.changed:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s; events: %+v", timeout, what, r.snapshot())
		}
	}
}

func countAddr(evs []Event, addr string) int {
	n := 0
	for _, e := range evs {
		if e.Addr == addr {
			n++
		}
	}
	return n
}

// runAsync runs d in a goroutine; the returned stop cancels it and returns
// Run's error, failing the test if Run does not return in time.
func runAsync(t *testing.T, d Discoverer, emit func(Event)) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, emit) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its context was cancelled")
			return nil
		}
	}
}

func TestStaticEmitsAndRepeats(t *testing.T) {
	r := newRecorder()
	s := Static{Addrs: []string{"10.0.0.1:7000", "[fe80::1%eth0]:7000"}, Interval: 10 * time.Millisecond}
	stop := runAsync(t, s, r.emit)
	r.waitFor(t, "every address three times", 5*time.Second, func(evs []Event) bool {
		return countAddr(evs, s.Addrs[0]) >= 3 && countAddr(evs, s.Addrs[1]) >= 3
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, e := range r.snapshot() {
		if e.Source != SourceStatic || e.ID != "" || e.Network != "" || e.Version != 0 || e.Gone {
			t.Errorf("static event %+v: want only Addr and Source %q", e, SourceStatic)
		}
	}
}

func TestStaticDefaultInterval(t *testing.T) {
	// With Interval zero the first round comes at once; the repeat would
	// take DefaultStaticInterval, which this test does not wait for.
	r := newRecorder()
	stop := runAsync(t, Static{Addrs: []string{"a:1"}}, r.emit)
	r.waitFor(t, "the first round", 5*time.Second, func(evs []Event) bool { return len(evs) >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestMultiFansIn(t *testing.T) {
	var overlap sync.Mutex // held while emit runs
	r := newRecorder()
	emit := func(e Event) {
		if !overlap.TryLock() {
			t.Error("emit called concurrently")
			return
		}
		defer overlap.Unlock()
		r.emit(e)
	}
	m := Multi{
		Static{Addrs: []string{"a:1"}, Interval: time.Millisecond},
		Static{Addrs: []string{"b:2"}, Interval: time.Millisecond},
		Static{Addrs: []string{"c:3"}, Interval: time.Millisecond},
	}
	stop := runAsync(t, m, emit)
	r.waitFor(t, "events of all three", 5*time.Second, func(evs []Event) bool {
		return countAddr(evs, "a:1") >= 5 && countAddr(evs, "b:2") >= 5 && countAddr(evs, "c:3") >= 5
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// failing is a Discoverer whose Run fails at once.
type failing struct{ err error }

func (f failing) Run(context.Context, func(Event)) error { return f.err }

func TestMultiStopsOnError(t *testing.T) {
	boom := errors.New("boom")
	m := Multi{Static{Addrs: []string{"a:1"}, Interval: time.Millisecond}, failing{boom}}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background(), func(Event) {}) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("Run = %v, want %v", err, boom)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Multi.Run did not stop after a member failed")
	}
}

func TestMultiEmpty(t *testing.T) {
	if err := (Multi{}).Run(context.Background(), func(Event) {}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckIfaces(t *testing.T) {
	all := []net.Interface{
		{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback},
		{Index: 2, Name: "eth0", Flags: net.FlagUp | net.FlagBroadcast | net.FlagMulticast},
		{Index: 3, Name: "eth1", Flags: net.FlagBroadcast | net.FlagMulticast},
		{Index: 4, Name: "wg0", Flags: net.FlagUp | net.FlagPointToPoint},
	}
	for _, tc := range []struct {
		names   []string
		want    []string
		wantErr string
	}{
		{names: nil, want: nil},
		{names: []string{"eth0"}, want: []string{"eth0"}},
		{names: []string{"nope0"}, wantErr: "interface nope0 not found (see `ip link`)"},
		{names: []string{"eth0", "eth1"}, wantErr: "interface eth1 is down"},
		{names: []string{"wg0"}, wantErr: "interface wg0 has no multicast"},
		{names: []string{"lo"}, wantErr: "interface lo has no multicast"},
	} {
		got, err := checkIfaces(tc.names, all)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("checkIfaces(%q) error = %v, want %q", tc.names, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("checkIfaces(%q): %v", tc.names, err)
			continue
		}
		if ifaceNames(got) != strings.Join(tc.want, ",") {
			t.Errorf("checkIfaces(%q) = %s, want %q", tc.names, ifaceNames(got), tc.want)
		}
	}
	if got := ifaceNames(multicastIfaces(all)); got != "eth0" {
		t.Errorf("multicastIfaces = %s, want eth0", got)
	}
}

func TestValidateIfacesNotFound(t *testing.T) {
	// Only reads the interface list; sends nothing.
	_, err := ValidateIfaces([]string{"oasdisc-none0"})
	if err == nil || err.Error() != "interface oasdisc-none0 not found (see `ip link`)" {
		t.Fatalf("ValidateIfaces = %v, want not-found error", err)
	}
}

func TestMDNSRejectsBadConfig(t *testing.T) {
	// These fail before any socket is opened.
	ctx := context.Background()
	for _, m := range []MDNS{
		{ID: "xyz", Port: 7000},
		{ID: strings.Repeat("a", 32), Port: 0},
		{ID: strings.Repeat("a", 32), Port: 70000},
		{ID: strings.Repeat("a", 32), Port: 7000, Ifaces: []string{"oasdisc-none0"}},
	} {
		if err := m.Run(ctx, func(Event) { t.Error("emit called") }); err == nil {
			t.Errorf("Run(%+v) = nil, want an error", m)
		}
	}
}
