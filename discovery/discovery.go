package discovery

import (
	"context"
	"sync"
)

// Event is one sighting of a node: "a node, maybe called ID, can be dialled
// at Addr". Sightings repeat; the consumer dedupes them.
type Event struct {
	ID      string // node ID, 32 hex digits; "" for static peers (unknown until the handshake)
	Addr    string // "host:port" to dial
	Network string // network name from the TXT record; "" for static peers
	Version int    // protocol version from the TXT record; 0 for static peers
	Gone    bool   // the node said goodbye (never set by MDNS today, see the package comment)
	Source  string // SourceMDNS or SourceStatic
}

// Values of Event.Source.
const (
	SourceMDNS   = "mdns"
	SourceStatic = "static"
)

// A Discoverer finds peers and reports them as Events.
type Discoverer interface {
	// Run emits events until ctx is done, then cleans up (withdraws any
	// announcement with a goodbye) and returns nil. It returns an error
	// only when it cannot start (bad configuration, no usable interface).
	// emit is called from one goroutine at a time and should not block for
	// long: while it runs, this Discoverer reads no further sightings.
	Run(ctx context.Context, emit func(Event)) error
}

// Multi runs several Discoverers at once and fans their events into one
// emit, which it calls from one goroutine at a time.
type Multi []Discoverer

// Run runs every Discoverer of m until ctx is done and waits for all of
// them to return. If one of them fails, Run stops the others and returns
// the first error.
func (m Multi) Run(ctx context.Context, emit func(Event)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		emitMu   sync.Mutex
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	serial := func(e Event) {
		emitMu.Lock()
		defer emitMu.Unlock()
		emit(e)
	}
	for _, d := range m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(ctx, serial); err != nil {
				errOnce.Do(func() {
					firstErr = err
					cancel()
				})
			}
		}()
	}
	wg.Wait()
	return firstErr
}
