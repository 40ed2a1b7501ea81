package fusefs

import (
	"reflect"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
)

// goFuseInterfaces are the node interfaces of go-fuse's fs package (v2.12):
// a node type serves a request only through them, so a method with the
// right name and a wrong signature would silently never be called.
var goFuseInterfaces = []reflect.Type{
	reflect.TypeFor[fs.NodeStatfser](), reflect.TypeFor[fs.NodeAccesser](), reflect.TypeFor[fs.NodeGetattrer](),
	reflect.TypeFor[fs.NodeSetattrer](), reflect.TypeFor[fs.NodeOnAdder](), reflect.TypeFor[fs.NodeGetxattrer](),
	reflect.TypeFor[fs.NodeSetxattrer](), reflect.TypeFor[fs.NodeRemovexattrer](), reflect.TypeFor[fs.NodeListxattrer](),
	reflect.TypeFor[fs.NodeReadlinker](), reflect.TypeFor[fs.NodeOpener](), reflect.TypeFor[fs.NodeReader](),
	reflect.TypeFor[fs.NodeWriter](), reflect.TypeFor[fs.NodeWritever](), reflect.TypeFor[fs.NodeFsyncer](),
	reflect.TypeFor[fs.NodeFlusher](), reflect.TypeFor[fs.NodeReleaser](), reflect.TypeFor[fs.NodeAllocater](),
	reflect.TypeFor[fs.NodeCopyFileRanger](), reflect.TypeFor[fs.NodeStatxer](), reflect.TypeFor[fs.NodeLseeker](),
	reflect.TypeFor[fs.NodeGetlker](), reflect.TypeFor[fs.NodeSetlker](), reflect.TypeFor[fs.NodeSetlkwer](),
	reflect.TypeFor[fs.NodeIoctler](), reflect.TypeFor[fs.NodeOnForgetter](), reflect.TypeFor[fs.NodeLookuper](),
	reflect.TypeFor[fs.NodeOpendirer](), reflect.TypeFor[fs.NodeReaddirer](), reflect.TypeFor[fs.NodeMkdirer](),
	reflect.TypeFor[fs.NodeMknoder](), reflect.TypeFor[fs.NodeLinker](), reflect.TypeFor[fs.NodeSymlinker](),
	reflect.TypeFor[fs.NodeCreater](), reflect.TypeFor[fs.NodeTmpfiler](), reflect.TypeFor[fs.NodeUnlinker](),
	reflect.TypeFor[fs.NodeRmdirer](), reflect.TypeFor[fs.NodeRenamer](), reflect.TypeFor[fs.NodeOpendirHandler](),
}

// TestNodeInterfaces: every method a node type declares with the name of a
// go-fuse node method implements that interface (the compile-time checks
// beside each type say which ones it means to), and each node type serves
// the requests it must.
func TestNodeInterfaces(t *testing.T) {
	byMethod := map[string]reflect.Type{}
	for _, it := range goFuseInterfaces {
		for i := range it.NumMethod() {
			byMethod[it.Method(i).Name] = it
		}
	}
	nodes := map[string]reflect.Type{
		"dirNode":     reflect.TypeFor[*dirNode](),
		"fileNode":    reflect.TypeFor[*fileNode](),
		"symlinkNode": reflect.TypeFor[*symlinkNode](),
		"specialNode": reflect.TypeFor[*specialNode](),
	}
	embedded := reflect.TypeFor[*fs.Inode]()
	for name, nt := range nodes {
		for i := range nt.NumMethod() {
			m := nt.Method(i)
			if _, inherited := embedded.MethodByName(m.Name); inherited {
				continue
			}
			if it, ok := byMethod[m.Name]; ok && !nt.Implements(it) {
				t.Errorf("%s.%s does not implement fs.%s: its signature differs, so go-fuse never calls it", name, m.Name, it.Name())
			}
		}
	}
	must := map[string][]reflect.Type{
		"dirNode": {reflect.TypeFor[fs.NodeLookuper](), reflect.TypeFor[fs.NodeReaddirer](), reflect.TypeFor[fs.NodeCreater](),
			reflect.TypeFor[fs.NodeMkdirer](), reflect.TypeFor[fs.NodeUnlinker](), reflect.TypeFor[fs.NodeRmdirer](),
			reflect.TypeFor[fs.NodeRenamer](), reflect.TypeFor[fs.NodeFsyncer](), reflect.TypeFor[fs.NodeOnForgetter]()},
		"fileNode": {reflect.TypeFor[fs.NodeOpener](), reflect.TypeFor[fs.NodeReader](), reflect.TypeFor[fs.NodeWriter](),
			reflect.TypeFor[fs.NodeFlusher](), reflect.TypeFor[fs.NodeFsyncer](), reflect.TypeFor[fs.NodeReleaser](),
			reflect.TypeFor[fs.NodeSetattrer](), reflect.TypeFor[fs.NodeOnForgetter]()},
		"symlinkNode": {reflect.TypeFor[fs.NodeReadlinker](), reflect.TypeFor[fs.NodeOnForgetter]()},
		"specialNode": {reflect.TypeFor[fs.NodeGetattrer](), reflect.TypeFor[fs.NodeOnForgetter]()},
	}
	for name, its := range must {
		for _, it := range its {
			if !nodes[name].Implements(it) {
				t.Errorf("%s does not implement fs.%s", name, it.Name())
			}
		}
	}
}
