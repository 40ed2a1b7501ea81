// Command oashare-loopback mounts a plain directory through FUSE with the
// same kernel options as an oashare mount, every byte passing through this
// process (kernel passthrough off), as oashare's do. It is the FUSE ceiling
// of `make bench`: what any user-space file system on this machine can
// reach before it does any work of its own.
//
//	oashare-loopback DIR MOUNTPOINT
//
// It serves until SIGINT or SIGTERM, then unmounts and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"

	"github.com/oashare/oashare/fusefs"
)

func main() {
	cmd := &cobra.Command{
		Use:   "oashare-loopback DIR MOUNTPOINT",
		Short: "Mount DIR at MOUNTPOINT through FUSE, data through this process, with oashare's mount options",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("want DIR and MOUNTPOINT, got %d argument(s) (see 'oashare-loopback --help')", len(args))
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return run(args[0], args[1])
		},
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "oashare-loopback:", err)
		os.Exit(1)
	}
}

func run(dir, mnt string) error {
	for _, p := range []string{dir, mnt} {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	server, err := Mount(dir, mnt, os.Getuid() == 0)
	if err != nil {
		return fmt.Errorf("mount %s: %v", mnt, err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	select {
	case <-sigs:
		if err := server.Unmount(); err != nil {
			return fmt.Errorf("unmount %s: %v", mnt, err)
		}
		<-done
	case <-done: // unmounted from outside
	}
	return nil
}

// Mount serves dir at mnt until the returned server is unmounted.
func Mount(dir, mnt string, allowOther bool) (interface {
	Wait()
	Unmount() error
}, error) {
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		return nil, err
	}
	ln, ok := root.(*fs.LoopbackNode)
	if !ok {
		return nil, errors.New("go-fuse's loopback root is not a *fs.LoopbackNode")
	}
	opts := fusefs.KernelOptions("oashare-loopback", dir, time.Second, allowOther)
	srv, err := fs.Mount(mnt, &node{ln}, opts)
	if err == nil {
		fusefs.SetReadAhead(mnt) // as oashare's mount does; fails quietly when not root
	}
	return srv, err
}

// node is a loopback node whose files never ask for kernel passthrough.
type node struct{ *fs.LoopbackNode }

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
)

// WrapChild makes every node of the tree a *node.
func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{ln}
	}
	return ops
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return wrap(fh), fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, wrap(fh), fl, errno
}

// noPassthrough is a loopback file that declines kernel passthrough, so
// reads and writes come to this process.
type noPassthrough struct{ *fs.LoopbackFile }

// PassthroughFd declines passthrough.
func (noPassthrough) PassthroughFd() (int, bool) { return -1, false }

func wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return noPassthrough{lf}
	}
	return fh
}
