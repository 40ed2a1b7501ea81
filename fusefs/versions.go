package fusefs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/oashare/oashare/chunknet/namespace"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
)

// Old versions. The index keeps every version of every inode and every
// version of every directory entry it received (until history is
// pruned), so a file's earlier contents, and a file deleted or replaced
// since, are found by its path: the entry versions of that name give the
// inodes that had it, their versions give the contents. Restoring one
// commits its content again (the chunks are named by their hashes and
// still held), as a new version of the file or as a new file.

// Version is one content a path has had.
type Version struct {
	N       int       `json:"n"` // 1 for the oldest
	Time    time.Time `json:"time"`
	Size    uint64    `json:"size"`
	Node    string    `json:"node"` // the node that wrote it
	Current bool      `json:"current"`
	inode   index.Inode
}

// ErrNoVersion: the path never had a version to list or restore.
var ErrNoVersion = errors.New("no such file, now or before, in the shared folder")

// walk returns the directory that holds rel's last name, and that name.
func (fsys *FS) walk(rel string) (parent uint64, name string, err error) {
	rel = strings.Trim(path.Clean("/"+rel), "/")
	if rel == "" {
		return 0, "", errors.New("the root of the share has no versions")
	}
	dir, name := path.Split(rel)
	parent = index.RootID
	for _, n := range strings.Split(strings.Trim(dir, "/"), "/") {
		if n == "" {
			continue
		}
		de, ok, err := fsys.db.LookupDirent(parent, n)
		if err != nil {
			return 0, "", err
		}
		if !ok || de.Type != index.TypeDir {
			return 0, "", fmt.Errorf("%s: no such directory in the shared folder", strings.TrimSuffix(dir, "/"))
		}
		parent = de.Child
	}
	return parent, name, nil
}

// Versions lists the contents the file at rel has had, oldest first: the
// contents of every file that had that name (a file deleted, or replaced
// by another, included), one entry per change of content. An empty
// content followed by another of the same file is left out: every
// create makes one.
func (fsys *FS) Versions(rel string) ([]Version, error) {
	parent, name, err := fsys.walk(rel)
	if err != nil {
		return nil, err
	}
	entries, err := fsys.db.EntryHistory(parent, name)
	if err != nil {
		return nil, err
	}
	cur, live, err := fsys.db.LookupDirent(parent, name)
	if err != nil {
		return nil, err
	}
	var out []Version
	seen := map[uint64]bool{}
	for _, de := range entries {
		if de.Child == 0 || seen[de.Child] || (de.Type != index.TypeFile && !de.Deleted) {
			continue
		}
		seen[de.Child] = true
		hist, err := fsys.db.History(de.Child)
		if err != nil {
			return nil, err
		}
		winner, ok, err := fsys.db.GetInode(de.Child)
		if err != nil {
			return nil, err
		}
		var last *index.Inode
		for i := range hist {
			in := hist[i]
			if in.Type != index.TypeFile || (last != nil && sameContent(last, &in)) {
				continue
			}
			if in.Size == 0 && i+1 < len(hist) {
				continue // the empty file of a create, before its first content
			}
			last = &hist[i]
			out = append(out, Version{
				Time:  time.UnixMilli(int64(in.Version >> 16)).UTC(),
				Size:  in.Size,
				Node:  in.Origin.Short(),
				inode: in,
			})
		}
		if live && cur.Child == de.Child && ok && len(out) > 0 {
			for i := len(out) - 1; i >= 0 && out[i].inode.ID == de.Child; i-- {
				if sameContent(&out[i].inode, &winner) {
					out[i].Current = true
					break
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", rel, ErrNoVersion)
	}
	// In time order across the inodes that had the name.
	slices.SortStableFunc(out, func(a, b Version) int { return cmp.Compare(a.inode.Version, b.inode.Version) })
	for i := range out {
		out[i].N = i + 1
	}
	return out, nil
}

func sameContent(a, b *index.Inode) bool {
	return a.Size == b.Size && a.Root == b.Root && a.Depth == b.Depth
}

// Restore brings back version n of rel (0: the newest that is not the
// current content) at rel itself, or as a new file at to if to is not
// empty. At rel, a file there now gets the old content as a new version
// (the one it replaces stays in the list); a deleted file is made again.
// It returns the version restored and the path it is at.
func (fsys *FS) Restore(rel string, n int, to string) (Version, string, error) {
	vs, err := fsys.Versions(rel)
	if err != nil {
		return Version{}, "", err
	}
	var v Version
	switch {
	case n < 0 || n > len(vs):
		return v, "", fmt.Errorf("%s has versions 1 to %d, not %d ('oashare versions' lists them)", rel, len(vs), n)
	case n > 0:
		v = vs[n-1]
	default:
		for i := len(vs) - 1; i >= 0; i-- {
			if !vs[i].Current {
				v = vs[i]
				break
			}
		}
		if v.N == 0 {
			return v, "", fmt.Errorf("%s has no version but the current one", rel)
		}
	}
	// Data of versions older than the restore window (--keep-versions)
	// is deleted once no one needs it: such a version is refused, not
	// brought back as a file that reads EIO.
	if v.Size > 0 {
		h, err := fsys.node.Check(context.Background(), tree.Version{Size: v.inode.Size, Root: v.inode.Root, Depth: v.inode.Depth}, false)
		if err != nil {
			return v, "", err
		}
		if h.Unavailable > 0 {
			return v, "", fmt.Errorf("version %d of %s is no longer stored (its data was deleted after the restore window, --keep-versions): pick a later one", v.N, rel)
		}
	}
	dest := rel
	if to != "" {
		dest = to
	}
	parent, name, err := fsys.walk(dest)
	if err != nil {
		return v, "", err
	}
	cur, exists, err := fsys.db.LookupDirent(parent, name)
	if err != nil {
		return v, "", err
	}
	var ops []index.Op
	switch {
	case exists && to != "":
		return v, "", fmt.Errorf("%s exists already: restore to a new name", to)
	case exists && cur.Type != index.TypeFile:
		return v, "", fmt.Errorf("%s is not a regular file now: restore it with --to NEWPATH", rel)
	case exists:
		ino, err := fsys.ns.Restore(cur.Child, v.inode.Size, v.inode.Root, v.inode.Depth)
		if err != nil {
			return v, "", err
		}
		ops = []index.Op{{Inode: &ino}}
	default:
		old := v.inode
		ino, err := fsys.ns.Create(parent, name, index.Inode{
			Type: index.TypeFile, Mode: old.Mode, Uid: old.Uid, Gid: old.Gid,
			Size: old.Size, Root: old.Root, Depth: old.Depth,
		})
		if errors.Is(err, namespace.ErrExists) {
			return v, "", fmt.Errorf("%s is taken by a directory", dest)
		}
		if err != nil {
			return v, "", err
		}
		ops = []index.Op{{Inode: &ino}, {Dirent: &index.Dirent{Parent: parent, Name: name, Child: ino.ID}}}
	}
	// The kernel may cache what was there: tell it, as for a peer's change.
	fsys.onRemote(&index.Record{Ops: ops})
	ctx, cancel := context.WithTimeout(fsys.node.Context(), 5*time.Second)
	defer cancel()
	fsys.notified(ctx)
	return v, dest, nil
}
