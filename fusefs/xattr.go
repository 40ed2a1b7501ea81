package fusefs

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is what every node of the tree knows of itself: the file system
// and its inode ID. It carries the extended attribute calls, the same for
// every kind of node.
//
// Extended attributes are part of an inode's version, replicated and
// merged with it like its mode (index.Inode.Xattrs). The kernel checks
// who may touch which namespace before asking (user.* only on files and
// directories, trusted.* only with CAP_SYS_ADMIN, the mode bits for
// user.*); system.* (POSIX ACLs) never reaches here, as the mount does
// not ask the kernel for ACL support, and any other namespace is refused
// with ENOTSUP, as a local disk refuses it.
type node struct {
	fsys *FS
	id   uint64
}

var (
	_ = (fs.NodeGetxattrer)((*node)(nil))
	_ = (fs.NodeSetxattrer)((*node)(nil))
	_ = (fs.NodeRemovexattrer)((*node)(nil))
	_ = (fs.NodeListxattrer)((*node)(nil))
)

// xattrNamespaces are the namespaces a local disk stores for programs.
var xattrNamespaces = []string{"user.", "trusted.", "security."}

// refusedXattrs are names of a supported namespace that the share
// refuses as NFS does without labeled NFS: an SELinux label is the policy
// of one machine, not a property of a shared file. Refusing it with
// ENOTSUP also makes ls -l (which asks for it of every file it lists)
// stop asking after the first file: it remembers a device without
// labels; an answer "none here" (ENODATA) would cost a request per file.
var refusedXattrs = map[string]bool{"security.selinux": true}

func supportedXattr(name string) bool {
	if refusedXattrs[name] {
		return false
	}
	for _, p := range xattrNamespaces {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return true
		}
	}
	return false
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !supportedXattr(attr) {
		return 0, syscall.EOPNOTSUPP
	}
	ino, errno := n.fsys.getInode(n.id)
	if errno != 0 {
		return 0, errno
	}
	v, ok := ino.Xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	return fill(dest, v)
}

// fill copies v into dest as getxattr and listxattr answer: the size
// alone for a zero-sized buffer, ERANGE for one too small.
func fill(dest, v []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if !supportedXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	_, err := n.fsys.ns.SetXattr(n.id, attr, data, flags)
	return n.fsys.toErrno("setxattr", err)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !supportedXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	_, err := n.fsys.ns.RemoveXattr(n.id, attr)
	return n.fsys.toErrno("removexattr", err)
}

// Listxattr lists the names NUL-terminated. trusted.* names are listed
// to root only, as a local disk lists them to CAP_SYS_ADMIN only.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ino, errno := n.fsys.getInode(n.id)
	if errno != 0 {
		return 0, errno
	}
	caller, _ := fuse.FromContext(ctx)
	root := caller != nil && caller.Uid == 0
	var list []byte
	for _, x := range ino.Xattrs {
		if !root && strings.HasPrefix(x.Name, "trusted.") {
			continue
		}
		list = append(append(list, x.Name...), 0)
	}
	return fill(dest, list)
}
