package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oashare/oashare/chunknet/wire"
)

// version and commit are set by the Makefile from git describe and git
// rev-parse (-ldflags -X main.version=... -X main.commit=...); a plain go
// build leaves them empty and versionInfo falls back to what the Go
// toolchain recorded.
var version, commit string

// buildInfo is what `oashare version` prints.
type buildInfo struct {
	Version  string // a release tag, git describe, or "devel"
	Commit   string // the revision built, "" if unknown
	Modified bool   // built from a tree with uncommitted changes
	Go       string
	Protocol uint16
}

func versionInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Go: runtime.Version(), Protocol: wire.Version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version // go install module@version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && b.Commit == "":
				b.Commit = s.Value
			case s.Key == "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// short is the one-line form of --version.
func (b buildInfo) short() string {
	s := "oashare " + b.Version
	if b.Commit != "" && !strings.Contains(b.Version, shortCommit(b.Commit)) {
		s += " (" + shortCommit(b.Commit) + ")"
	}
	return fmt.Sprintf("%s, protocol %d, %s", s, b.Protocol, b.Go)
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

func (b buildInfo) write(w io.Writer) {
	commit := b.Commit
	switch {
	case commit == "":
		commit = "unknown (built outside a git checkout, or with -buildvcs=false)"
	case b.Modified:
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(w, "oashare %s\n", b.Version)
	fmt.Fprintf(w, "commit:    %s\n", commit)
	fmt.Fprintf(w, "go:        %s %s/%s\n", b.Go, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "protocol:  %d (peers speaking another version are refused)\n", b.Protocol)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and protocol version",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			versionInfo().write(cmd.OutOrStdout())
			return nil
		},
	}
}
