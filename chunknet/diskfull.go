package chunknet

import (
	"time"

	"github.com/oashare/oashare/index/format"
)

// A full disk. A node whose store finds its disk full answers puts with
// StatusFull; the sender then offers copies to every node with room
// before that one (replicatePass), for fullFor, unless a put to it
// succeeds meanwhile. This node's own disk counts as full while its last
// write of chunks failed for want of space (index.DB.DiskFull). Placement
// itself does not change: the full node keeps its copies and is asked
// for them; repair tries again to copy to it as to any target.

// fullFor is how long a peer that said its disk is full is offered
// copies last (after every node with room), unless a put to it succeeds.
const fullFor = 30 * time.Second

// noteFull records what a put to peer id said: its disk is full, or
// (allOK) it stored everything.
func (n *Node) noteFull(id format.NodeID, full, allOK bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case full:
		if _, was := n.fullPeers[id]; !was {
			n.log.Info("peer's disk is full: its copies go to other nodes", "peer", id.Short())
		}
		n.fullPeers[id] = time.Now()
	case allOK:
		delete(n.fullPeers, id)
	}
}

// isFull reports whether node id (this one or a peer) is known to have
// a full disk.
func (n *Node) isFull(id format.NodeID) bool {
	if id == n.self {
		_, full := n.db.DiskFull()
		return full
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	at, ok := n.fullPeers[id]
	return ok && time.Since(at) < fullFor
}

// FullPeers returns the peers whose disks said full in the last fullFor.
func (n *Node) FullPeers() []format.NodeID {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []format.NodeID
	for id, at := range n.fullPeers {
		if time.Since(at) < fullFor {
			out = append(out, id)
		}
	}
	return out
}
