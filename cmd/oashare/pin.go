package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
)

// Pinning (oashare pin): the node keeps a full, verified copy of the
// pinned files and trees in its store, so that they read at local-disk
// speed with every peer gone. The pins are inode IDs in the index
// (index.Pin; a directory stands for everything under it, files added
// later included); the pin command fetches what is missing with progress,
// and pinKeeper, on the node, keeps every pinned file's current version
// whole here and tells repair not to drop those copies
// (chunknet.SetPinned).

// pinJSON is one line of the answer to pin: progress, then done or an
// error.
type pinJSON struct {
	Files     int    `json:"files"`
	FilesDone int    `json:"files_done"`
	Bytes     int64  `json:"bytes"`
	BytesDone int64  `json:"bytes_done"`
	Fetched   int64  `json:"fetched"`
	Done      bool   `json:"done,omitempty"`
	Error     string `json:"error,omitempty"`
}

// pinnedFile is a file under the pins: its inode and path.
type pinnedFile struct {
	ino  index.Inode
	path string
}

// pinnedFiles lists the files under the inodes roots (files or
// directories), each once (hard links), with their current versions.
func pinnedFiles(ctx context.Context, db *index.DB, roots []uint64) ([]pinnedFile, error) {
	seen := map[uint64]bool{}
	var out []pinnedFile
	var walk func(id uint64, p string) error
	walk = func(id uint64, p string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if seen[id] {
			return nil
		}
		seen[id] = true
		ino, ok, err := db.GetInode(id)
		if err != nil || !ok {
			return err // gone: nothing to keep
		}
		switch ino.Type {
		case index.TypeFile:
			out = append(out, pinnedFile{ino: ino, path: p})
		case index.TypeDir:
			ents, err := db.ReadDir(id)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := walk(e.Child, p+"/"+e.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, id := range roots {
		if err := walk(id, fmt.Sprintf("(inode %d)", id)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func versionOfInode(ino *index.Inode) tree.Version {
	return tree.Version{Size: ino.Size, Root: ino.Root, Depth: ino.Depth}
}

// pin records the pins of rels (paths inside the share) and fetches what
// of them is missing here, streaming progress to enc. A cancelled ctx
// (the asker went away) stops the fetching; the pins stay, and
// pinKeeper or the next pin continues.
func (c *control) pin(ctx context.Context, enc *json.Encoder, rels []string) {
	db := c.node.DB()
	var roots []uint64
	for _, rel := range rels {
		id, _, err := resolve(db, rel)
		if err != nil {
			enc.Encode(pinJSON{Error: err.Error()})
			return
		}
		roots = append(roots, id)
	}
	for _, id := range roots {
		if err := db.Pin(id); err != nil {
			enc.Encode(pinJSON{Error: err.Error()})
			return
		}
	}
	files, err := pinnedFiles(ctx, db, roots)
	if err != nil {
		enc.Encode(pinJSON{Error: err.Error()})
		return
	}
	var p pinJSON
	p.Files = len(files)
	for _, f := range files {
		p.Bytes += int64(f.ino.Size)
	}
	var mu sync.Mutex
	last := time.Time{}
	send := func(force bool) error {
		mu.Lock()
		defer mu.Unlock()
		if !force && time.Since(last) < 200*time.Millisecond {
			return nil
		}
		last = time.Now()
		return enc.Encode(p)
	}
	if err := send(true); err != nil {
		return
	}
	var failed []string
	for _, f := range files {
		before, fetchedBefore := p.BytesDone, p.Fetched
		err := c.node.Pin(ctx, versionOfInode(&f.ino), func(fp chunknet.PinProgress) {
			mu.Lock()
			p.BytesDone, p.Fetched = before+fp.BytesDone, fetchedBefore+fp.Fetched
			mu.Unlock()
			send(false)
		})
		if ctx.Err() != nil {
			return // the asker went away: the pins stay, pinKeeper continues
		}
		mu.Lock()
		p.BytesDone = before + int64(f.ino.Size) // holes count as done
		if err != nil {
			failed = append(failed, f.path)
			c.log.Warn("pin: a file could not be made whole here", "path", f.path, "err", err)
		} else {
			p.FilesDone++
		}
		mu.Unlock()
		if send(false) != nil {
			return
		}
	}
	c.kickPins()
	if len(failed) > 0 {
		p.Error = fmt.Sprintf("%d of %d files could not be fetched whole (no live peer holds some of their data; first: %s): they stay pinned and are completed when their holders are back (run pin again to see)", len(failed), len(files), failed[0])
		enc.Encode(p)
		return
	}
	p.Done = true
	enc.Encode(p)
}

// unpin removes the pins of rels; a path pinned only through a directory
// above it says so.
func (c *control) unpin(rels []string) (any, error) {
	db := c.node.DB()
	n := 0
	for _, rel := range rels {
		id, _, err := resolve(db, rel)
		if err != nil {
			return nil, err
		}
		ok, err := db.Unpin(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("/%s is not pinned itself (a directory above it may be: unpin that one)", rel)
		}
		n++
	}
	c.kickPins()
	return map[string]int{"unpinned": n}, nil
}

// pinEvery is how often pinKeeper makes the pinned files whole again
// (a file changed, a peer came back) without being woken.
const pinEvery = 30 * time.Second

func (c *control) kickPins() {
	select {
	case c.pinKick <- struct{}{}:
	default:
	}
}

// pinKeeper keeps every pinned file's current version whole in this
// node's store and hands their items to repair, until ctx ends.
func (c *control) pinKeeper(ctx context.Context) {
	t := time.NewTicker(pinEvery)
	defer t.Stop()
	for {
		c.keepPins(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.pinKick:
		}
	}
}

func (c *control) keepPins(ctx context.Context) {
	db := c.node.DB()
	roots, err := db.Pins()
	if err != nil {
		c.log.Error("pins: reading the pins", "err", err)
		return
	}
	files, err := pinnedFiles(ctx, db, roots)
	if err != nil {
		c.log.Error("pins: listing the pinned files", "err", err)
		return
	}
	var items []index.Item
	st := pinStats{Files: len(files)}
	for _, f := range files {
		v := versionOfInode(&f.ino)
		st.Bytes += int64(f.ino.Size)
		if err := c.node.Pin(ctx, v, nil); err != nil {
			if ctx.Err() != nil {
				return
			}
			st.NotWhole++
			c.log.Debug("pins: a pinned file is not whole here yet", "path", f.path, "err", err)
		}
		its, err := c.node.VersionItems(ctx, v)
		if err != nil {
			continue
		}
		items = append(items, its...)
	}
	c.node.SetPinned(items)
	st.At = time.Now().UTC().Format(time.RFC3339)
	c.pinMu.Lock()
	c.pinStats = st
	c.pinMu.Unlock()
}

// pinStats is what the last keepPins found, for status.
type pinStats struct {
	Files    int    `json:"files"`
	Bytes    int64  `json:"bytes"`
	NotWhole int    `json:"not_whole"` // files with data no live peer could give
	At       string `json:"checked_at,omitempty"`
}

func newPinCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pin PATH...",
		Short: "Keep a full, verified copy of files or trees on this node, for offline use",
		Long: `Pin files or directories inside an oashare mount: the node serving the mount
fetches every byte of them it lacks (verified, as every read), shows progress
(bytes, files, rate, time left; a bar on a terminal, lines otherwise), and from
then on keeps them whole: files changed or added under a pinned directory are
fetched too, and these copies are never dropped or moved away while pinned.
A pinned file reads at local-disk speed with every peer gone.
Interrupted (Ctrl-C, a crash, a lost peer), the pin stays: the node goes on in
the background, and the next 'oashare pin' continues where it stopped.
'oashare unpin PATH...' undoes it.`,
		Example: `  oashare pin ~/net/photos ~/net/notes.md`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataDir, rels, err := pathsInOneMount(args)
			if err != nil {
				return err
			}
			return pin(cmd.OutOrStdout(), dataDir, rels)
		},
	}
	return cmd
}

func newUnpinCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unpin PATH...",
		Short: "Stop keeping a full copy of pinned files or trees on this node",
		Long: `Remove the pins of files or directories pinned with 'oashare pin'. Their copies
on this node become ordinary copies again: repair may move them to the peers
that should hold them.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataDir, rels, err := pathsInOneMount(args)
			if err != nil {
				return err
			}
			arg, _ := json.Marshal(rels)
			var r map[string]int
			if err := ask(dataDir, "unpin", string(arg), &r); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unpinned %d paths\n", r["unpinned"])
			return nil
		},
	}
}

// pathsInOneMount resolves paths inside one oashare mount to its node's
// data dir and the paths inside the share.
func pathsInOneMount(args []string) (dataDir string, rels []string, err error) {
	for _, a := range args {
		d, rel, err := inMount(a, "", false)
		if err != nil {
			return "", nil, err
		}
		if dataDir != "" && d != dataDir {
			return "", nil, fmt.Errorf("%s is in another oashare mount than %s: pin each mount's paths with a command of their own", a, args[0])
		}
		dataDir = d
		rels = append(rels, rel)
	}
	return dataDir, rels, nil
}

// pin asks the node of dataDir to pin rels, drawing its progress on out:
// a progress bar on a terminal, a line every half second otherwise.
func pin(out io.Writer, dataDir string, rels []string) error {
	arg, _ := json.Marshal(rels)
	conn, dec, err := askStream(dataDir, "pin", string(arg))
	if err != nil {
		return err
	}
	defer conn.Close()
	tty := writesToTerminal(out)
	var bar *progressbar.ProgressBar
	lastLine := time.Time{}
	start := time.Now()
	for {
		var p pinJSON
		if err := dec.Decode(&p); err != nil {
			if bar != nil {
				fmt.Fprintln(out)
			}
			return fmt.Errorf("the node stopped answering during the pin: %v (the pin stays; run pin again to continue)", err)
		}
		if tty && bar == nil && p.Bytes > 0 {
			bar = progressbar.NewOptions64(p.Bytes,
				progressbar.OptionSetWriter(out),
				progressbar.OptionSetDescription("pinning"),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionFullWidth(),
			)
		}
		if bar != nil {
			bar.Describe(fmt.Sprintf("pinning %d/%d files", p.FilesDone, p.Files))
			bar.Set64(p.BytesDone)
		} else if !tty && p.Error == "" && (time.Since(lastLine) >= 500*time.Millisecond || p.Done) {
			lastLine = time.Now()
			fmt.Fprintln(out, pinLine(p, time.Since(start)))
		}
		switch {
		case p.Error != "":
			if bar != nil {
				fmt.Fprintln(out)
			}
			return errors.New(p.Error)
		case p.Done:
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "pinned %d files (%s; %s fetched now, the rest was here): all of it is on this node, verified, and kept there ('oashare unpin' undoes it)\n", p.Files, size(p.Bytes), size(p.Fetched))
			return nil
		}
	}
}

// pinLine is the progress of a pin as one line: files, bytes, rate,
// time left.
func pinLine(p pinJSON, took time.Duration) string {
	line := fmt.Sprintf("pinning: %d/%d files, %s of %s", p.FilesDone, p.Files, size(p.BytesDone), size(p.Bytes))
	if s := took.Seconds(); s > 0 && p.Fetched > 0 {
		rate := float64(p.Fetched) / s
		line += fmt.Sprintf(", %s/s", size(int64(rate)))
		if left := p.Bytes - p.BytesDone; left > 0 && rate > 0 {
			line += fmt.Sprintf(", %s left", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	return line
}
