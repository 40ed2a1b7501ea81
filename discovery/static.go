package discovery

import (
	"context"
	"time"
)

// DefaultStaticInterval is how often Static repeats its addresses when
// Interval is zero.
const DefaultStaticInterval = 5 * time.Second

// Static reports a fixed list of addresses: one Event per address at start,
// and again every Interval, so that a dialer that failed can retry. The
// Events carry no ID, Network or Version; the handshake learns them.
type Static struct {
	Addrs    []string      // "host:port" to dial
	Interval time.Duration // zero means DefaultStaticInterval
}

// Run implements Discoverer.
func (s Static) Run(ctx context.Context, emit func(Event)) error {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultStaticInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, a := range s.Addrs {
			if ctx.Err() != nil {
				return nil
			}
			emit(Event{Addr: a, Source: SourceStatic})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
