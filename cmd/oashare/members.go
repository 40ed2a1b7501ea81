package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/discovery"
	"github.com/oashare/oashare/index"
)

// identityFileName holds the node's Ed25519 key (PKCS #8, PEM), 0600. It
// never leaves the data directory: peers learn only its public half.
const identityFileName = "identity.key"

// loadIdentity reads the node's key from dataDir, making one on first
// start. A data directory whose index predates identities is refused: its
// records are unsigned and its node ID is not derived from a key.
func loadIdentity(dataDir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dataDir, identityFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("%s: not a PEM private key; restore it from a backup, or move the data dir away to start as a new node", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v; restore it from a backup, or move the data dir away to start as a new node", path, err)
		}
		key, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an Ed25519 key", path)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, indexDirName)); err == nil {
		return nil, fmt.Errorf("data dir %s holds an index but no %s: it was made by an oashare without members and keys, and cannot join a network; move it away (mv %s %s.old) and start again, then copy the files back into the new mount",
			dataDir, identityFileName, dataDir, dataDir)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return key, nil
}

// memberName is the name this node is listed under: its host name.
func memberName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unnamed"
	}
	if len(h) > index.MaxMemberName {
		h = h[:index.MaxMemberName]
	}
	return h
}

// addMachineHint is what the log and status say on how to add a machine.
func addMachineHint(mnt string) string {
	return fmt.Sprintf("to add a machine: run 'oashare invite %s' here, then 'oashare mount DIR --join CODE' on the new machine", mnt)
}

// joinNetwork makes the data dir's index a member of the network of the
// node that issued code: it looks for the inviter with mDNS (unless
// noMDNS) and at the --peer addresses, and proves the code to it.
func joinNetwork(ctx context.Context, db *index.DB, key ed25519.PrivateKey, code chunknet.JoinCode, f mountFlags, log *slog.Logger) (index.Network, error) {
	ctx, cancel := context.WithTimeout(ctx, f.joinWait)
	defer cancel()
	addrs := make(chan string, 64)
	var ds discovery.Multi
	if len(f.peers) > 0 {
		ds = append(ds, discovery.Static{Addrs: f.peers, Interval: 2 * time.Second})
	}
	if !f.noMDNS {
		ds = append(ds, discovery.MDNS{ID: db.NodeID().String(), IDPrefix: code.InviterPrefix(), Version: int(wire.Version),
			Ifaces: f.ifaces, Logger: log, Rebrowse: 3 * time.Second})
	}
	discDone := make(chan struct{})
	go func() {
		defer close(discDone)
		ds.Run(ctx, func(e discovery.Event) {
			if e.Gone {
				return
			}
			select {
			case addrs <- e.Addr:
			default:
			}
		})
	}()
	defer func() { cancel(); <-discDone }()
	log.Info("joining: looking for the node that issued the code", "inviter", code.InviterPrefix(), "mdns", !f.noMDNS, "peers", f.peers)
	netw, err := chunknet.Join(ctx, chunknet.JoinConfig{Identity: key, Code: code, Name: memberName(), Logger: log, Addrs: addrs})
	switch {
	case errors.Is(err, chunknet.ErrJoinRefused):
		return index.Network{}, err
	case errors.Is(err, context.DeadlineExceeded):
		return index.Network{}, fmt.Errorf("joining: no node with ID %s… answered within %v: start oashare on the machine that printed the code (it must be running), check both are on one LAN, or pass --peer HOST:PORT of that machine",
			code.InviterPrefix(), f.joinWait)
	case err != nil:
		return index.Network{}, fmt.Errorf("joining: %v", err)
	}
	if err := db.JoinNetwork(netw); err != nil {
		return index.Network{}, err
	}
	return netw, nil
}

// Control requests of membership.

type inviteJSON struct {
	Code    string `json:"code"`
	Expires string `json:"expires"`
	Network string `json:"network"`
}

type memberJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Self     bool   `json:"self,omitempty"`
	Removed  bool   `json:"removed,omitempty"`
	LastSeen string `json:"last_seen"`
	Addr     string `json:"addr,omitempty"`
}

func (c *control) invite(arg string) (any, error) {
	ttl, err := time.ParseDuration(arg)
	if err != nil {
		return nil, fmt.Errorf("expiry %q: %v", arg, err)
	}
	code, exp, err := c.node.Invite(ttl)
	if err != nil {
		return nil, err
	}
	netw, _ := c.node.DB().Network()
	return inviteJSON{Code: code.String(), Expires: exp.Format(time.RFC3339), Network: netw.Name}, nil
}

func (c *control) members() []memberJSON {
	live := map[string]string{}
	for _, p := range c.node.Peers() {
		live[p.ID.String()] = p.Addr
	}
	var out []memberJSON
	for _, m := range c.node.DB().Members() {
		j := memberJSON{ID: m.ID.String(), Name: m.Name, Removed: m.Removed, Self: m.ID == c.node.ID()}
		switch addr, ok := live[j.ID]; {
		case j.Self:
			j.LastSeen, j.Addr = "now (this node)", c.node.Addr()
		case ok:
			j.LastSeen, j.Addr = "now", addr
		default:
			if t, addr := c.node.LastSeen(m.ID); !t.IsZero() {
				j.LastSeen, j.Addr = t.Format(time.RFC3339), addr
			} else {
				j.LastSeen = "not since this node started"
			}
		}
		out = append(out, j)
	}
	return out
}

func (c *control) remove(arg string) (any, error) {
	arg = strings.ToLower(strings.TrimSpace(arg))
	var match []index.Member
	for _, m := range c.node.DB().Members() {
		if !m.Removed && (strings.HasPrefix(m.ID.String(), arg) || strings.EqualFold(m.Name, arg)) {
			match = append(match, m)
		}
	}
	switch {
	case arg == "" || len(match) == 0:
		return nil, fmt.Errorf("no member %q: give a node ID (or its first digits) or a name from 'oashare members'", arg)
	case len(match) > 1:
		return nil, fmt.Errorf("%q names %d members: give more digits of the node ID ('oashare members')", arg, len(match))
	}
	if err := c.node.RemoveMember(match[0].ID); err != nil {
		return nil, err
	}
	return memberJSON{ID: match[0].ID.String(), Name: match[0].Name, Removed: true}, nil
}

// dataDirArg finds the data dir of the node serving MOUNTPOINT, or --data.
func dataDirArg(cmd *cobra.Command, args []string, data string) (string, error) {
	if len(args) == 0 || cmd.Flags().Changed("data") {
		return data, nil
	}
	abs, err := filepath.Abs(args[0])
	if err != nil {
		return "", err
	}
	_, dir, err := oashareMountOf(abs)
	return dir, err
}

func newInviteCmd() *cobra.Command {
	var data string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "invite [MOUNTPOINT]",
		Short: "Print a join code that lets one more machine into this node's network",
		Long: `Ask the node serving MOUNTPOINT (or running with --data) for a join code:
single use, valid for --expires. On the new machine, run
'oashare mount DIR --join CODE' while this node runs; it finds this node on
the LAN (mDNS, or --peer HOST:PORT) and becomes a member. The code is the
last line of the output; anyone who has it before it is used can join, so
pass it on as you would a password.`,
		Example: `  oashare invite ~/net
  oashare invite --data /srv/oashare --expires 1h`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if expires <= 0 {
				return fmt.Errorf("--expires %v: must be positive, e.g. 1h or 30m", expires)
			}
			dir, err := dataDirArg(cmd, args, data)
			if err != nil {
				return err
			}
			var inv inviteJSON
			if err := ask(dir, "invite", expires.String(), &inv); err != nil {
				return err
			}
			fmt.Printf("Join code for network %q, single use, valid until %s.\n", inv.Network, inv.Expires)
			fmt.Printf("On the new machine, while this node runs: oashare mount DIR --join CODE\n")
			fmt.Println(inv.Code)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask")
	cmd.Flags().DurationVar(&expires, "expires", chunknet.DefaultInviteTTL, "how long the code is valid")
	return cmd
}

func newMembersCmd() *cobra.Command {
	var data string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members [MOUNTPOINT]",
		Short: "List the members of this node's network",
		Long: `List the members of the network of the node serving MOUNTPOINT (or running
with --data): node ID, name, when this node last saw it and at which address.
Removed members are listed as such.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDirArg(cmd, args, data)
			if err != nil {
				return err
			}
			var ms []memberJSON
			if err := ask(dir, "members", "", &ms); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(ms)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tNAME\tLAST SEEN\tADDRESS")
			for _, m := range ms {
				seen := m.LastSeen
				if m.Removed {
					seen = "removed"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.ID, m.Name, seen, m.Addr)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON array")
	return cmd
}

func newRemoveCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "remove NODE [MOUNTPOINT]",
		Short: "Revoke a member: every peer refuses it from then on",
		Long: `Remove NODE (a node ID, its first digits, or its name from 'oashare members')
from the network of the node serving MOUNTPOINT (or running with --data).
Every member then refuses
its connections and its later changes, and makes again elsewhere the copies it
held. Removal is final: that machine can come back only as a new node (a new
data directory) with a new join code.`,
		Args: rangeArgs(1, 2, "NODE and at most a MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDirArg(cmd, args[1:], data)
			if err != nil {
				return err
			}
			var m memberJSON
			if err := ask(dir, "remove", args[0], &m); err != nil {
				return err
			}
			fmt.Printf("removed %s (%s)\n", m.ID, m.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask")
	return cmd
}
