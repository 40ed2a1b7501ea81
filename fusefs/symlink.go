package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// symlinkNode is a symbolic link; its target lives in the inode record.
type symlinkNode struct {
	fs.Inode
	node
}

var (
	_ = (fs.NodeReadlinker)((*symlinkNode)(nil))
	_ = (fs.NodeGetattrer)((*symlinkNode)(nil))
	_ = (fs.NodeSetattrer)((*symlinkNode)(nil))
)

func (s *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ino, errno := s.fsys.getInode(s.id)
	if errno != 0 {
		return nil, errno
	}
	return []byte(ino.Target), 0
}

func (s *symlinkNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ino, errno := s.fsys.getInode(s.id)
	if errno != 0 {
		return errno
	}
	s.fsys.fillAttr(&ino, ino.Size, ino.MtimeNs, &out.Attr)
	s.fsys.fillCounts(&ino, &out.Attr)
	return 0
}

func (s *symlinkNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return s.fsys.setattr(ctx, s.id, nil, in, out)
}
