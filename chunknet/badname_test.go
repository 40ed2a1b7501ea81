package chunknet

import (
	"testing"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
)

// TestPushedBadNamesAreRefused: a peer pushing entries whose names could
// break the tree (a '/', a NUL, ".", "..", empty, too long) or that hang
// below no directory gets "refused" for each record, nothing is written,
// and the node keeps serving the connection.
func TestPushedBadNamesAreRefused(t *testing.T) {
	n := startNode(t, Config{Replicas: 1})
	p := connectRaw(t, n.node.Addr())
	origin := randNodeID(t)
	long := make([]byte, index.MaxNameLen+1)
	for i := range long {
		long[i] = 'x'
	}
	bad := []index.Dirent{
		{Parent: index.RootID, Name: "a/b", Child: 7, Type: index.TypeFile},
		{Parent: index.RootID, Name: "nul\x00", Child: 7, Type: index.TypeFile},
		{Parent: index.RootID, Name: ".", Child: 7, Type: index.TypeDir},
		{Parent: index.RootID, Name: "..", Child: 7, Type: index.TypeDir},
		{Parent: index.RootID, Name: "", Child: 7, Type: index.TypeFile},
		{Parent: index.RootID, Name: string(long), Child: 7, Type: index.TypeFile},
		{Parent: 0, Name: "orphan", Child: 7, Type: index.TypeFile},
	}
	for i, de := range bad {
		rec := index.EncodeRecord(&index.Record{Origin: origin, Seq: 1, HLC: 1 << 16, Ops: []index.Op{{Dirent: &de}}})
		p.send(t, wire.AppendPush(nil, uint64(i+1), [][]byte{rec}))
		f := p.next(t)
		if f.Type != wire.TypePushResult || f.ReqID != uint64(i+1) {
			t.Fatalf("record %d (%q): got %v id %d", i, de.Name, f.Type, f.ReqID)
		}
		st, err := wire.DecodeStatuses(f.Payload)
		if err != nil || len(st) != 1 || st[0] != pushInvalid {
			t.Errorf("record %d (%q): statuses %v, %v; want refused", i, de.Name, st, err)
		}
	}
	if seq := n.db.VersionVector()[origin]; seq != 0 {
		t.Errorf("a refused record was applied: the node is at seq %d of its origin", seq)
	}
	if des, err := n.db.ReadDir(index.RootID); err != nil || len(des) != 0 {
		t.Errorf("root after refused records: %v, %v", des, err)
	}
	// The connection still serves.
	p.send(t, wire.AppendPing(nil, 99))
	if f := p.next(t); f.Type != wire.TypePong || f.ReqID != 99 {
		t.Fatalf("after refusals: got %v id %d, want Pong 99", f.Type, f.ReqID)
	}
}
