package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// specialNode is a FIFO, socket or device node: metadata only. Opening one
// is the kernel's business (a FIFO or device is served locally), so the
// node needs no content.
type specialNode struct {
	fs.Inode
	node
}

var (
	_ = (fs.NodeGetattrer)((*specialNode)(nil))
	_ = (fs.NodeSetattrer)((*specialNode)(nil))
)

func (s *specialNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ino, errno := s.fsys.getInode(s.id)
	if errno != 0 {
		return errno
	}
	s.fsys.fillAttr(&ino, 0, ino.MtimeNs, &out.Attr)
	s.fsys.fillCounts(&ino, &out.Attr)
	return 0
}

func (s *specialNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return s.fsys.setattr(ctx, s.id, nil, in, out)
}
