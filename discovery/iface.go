package discovery

import (
	"errors"
	"fmt"
	"net"
)

// ValidateIfaces looks up the named interfaces and checks that each one is
// up and multicast-capable, so that a typo in a flag fails at start with a
// clear message instead of a silent node. The result keeps the order of
// names.
func ValidateIfaces(names []string) ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	return checkIfaces(names, all)
}

// checkIfaces is ValidateIfaces against a given interface list.
func checkIfaces(names []string, all []net.Interface) ([]net.Interface, error) {
	byName := make(map[string]net.Interface, len(all))
	for _, ifi := range all {
		byName[ifi.Name] = ifi
	}
	out := make([]net.Interface, 0, len(names))
	for _, name := range names {
		ifi, ok := byName[name]
		switch {
		case !ok:
			return nil, fmt.Errorf("interface %s not found (see `ip link`)", name)
		case ifi.Flags&net.FlagUp == 0:
			return nil, fmt.Errorf("interface %s is %w", name, ErrIfaceDown)
		case ifi.Flags&net.FlagMulticast == 0:
			return nil, fmt.Errorf("interface %s has no multicast", name)
		}
		out = append(out, ifi)
	}
	return out, nil
}

// ErrIfaceDown: a named interface exists but is down. MDNS.Run waits for
// it to come up.
var ErrIfaceDown = errors.New("down")

// errNoIfaces is returned when no interface qualifies for mDNS.
var errNoIfaces = errors.New("no interface is up and multicast-capable (see `ip link`)")

// multicastIfaces returns the interfaces mDNS uses when none are named:
// every interface that is up and multicast-capable, loopback excluded.
func multicastIfaces(all []net.Interface) []net.Interface {
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
			out = append(out, ifi)
		}
	}
	return out
}
