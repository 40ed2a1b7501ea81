package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/discovery"
	"github.com/oashare/oashare/fusefs"
	"github.com/oashare/oashare/index"
)

type mountFlags struct {
	data     string
	listen   string
	ifaces   []string
	noMDNS   bool
	peers    []string
	replicas int
	network  string
	join     string
	joinCode chunknet.JoinCode
	joinWait time.Duration
	logLevel string
	logFile  string
	noXattrs bool
	ui       string
	uiSet    bool // --ui given: failing to serve it is an error
	fuseLog  bool
	cacheMB  int
	quotaMB  int64
	pprof    string

	repairAfter  time.Duration
	repairRateMB int
	scrubEvery   time.Duration
	reclaimAfter time.Duration
	keepVersions time.Duration
	forgetAfter  time.Duration
}

func newMountCmd() *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Share MOUNTPOINT with every oashare peer on the LAN",
		Long: `Mount the shared folder on MOUNTPOINT (an existing, empty directory) and serve
it until Ctrl-C or SIGTERM, which unmount it and exit 0.

Only members of one network share a folder. Started for the first time
without --join, a node creates a new network (named --network) and is its
first member; 'oashare invite' then prints a join code, and
'oashare mount DIR --join CODE' on another machine makes it a member. From then
on its data directory belongs to that network. Members find each other by mDNS
(service _oashare._tcp) on the chosen interfaces; --peer adds peers by address
where multicast does not reach. Every connection is TLS 1.3 between members
whose keys are checked; nobody else can read or change anything.

Each chunk is stored on --replicas peers (fewer while fewer are alive). The
node's state (index, chunks, key, control socket) lives in --data, readable by
this user only; one node per data directory. A stale mount left on MOUNTPOINT
by a killed node is cleaned up first.`,
		Example: `  oashare mount ~/net
  oashare mount ~/net --join oa1-ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567
  oashare mount ~/net --iface eth0 --replicas 2
  oashare mount /mnt/share --no-mdns --peer 192.168.1.20:7733 --data /srv/oashare`,
		Args: exactArgs(1, "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.uiSet = cmd.Flags().Changed("ui")
			return runMount(cmd.Context(), args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", defaultDataDir(), "node state directory: index, chunks, identity, control socket")
	fl.StringVar(&f.listen, "listen", ":"+strconv.Itoa(chunknet.DefaultPort), "HOST:PORT for the peer protocol")
	fl.StringArrayVar(&f.ifaces, "iface", nil, "announce and browse mDNS only on this interface (repeatable; default: every multicast interface)")
	fl.BoolVar(&f.noMDNS, "no-mdns", false, "do not use mDNS; find peers only through --peer")
	fl.StringArrayVar(&f.peers, "peer", nil, "HOST:PORT of a peer to connect to (repeatable)")
	fl.IntVar(&f.replicas, "replicas", 3, "copies of each chunk, on distinct peers")
	fl.StringVar(&f.network, "network", "home", "name of the network a first start creates (shown to members only)")
	fl.StringVar(&f.join, "join", "", "join the network of the member that printed this code ('oashare invite'); ignored once the data dir belongs to a network")
	fl.DurationVar(&f.joinWait, "join-wait", 2*time.Minute, "how long --join looks for the member that printed the code")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFile, "log-file", "", "append the log to this file (created readable by this user only) instead of standard error")
	fl.Int64Var(&f.quotaMB, "quota-mb", 0, "MiB each member may have this node store for it (0 = a fair share: the data disk's size divided by the members; -1 = no limit)")
	fl.DurationVar(&f.repairAfter, "repair-after", time.Minute, "how long a peer may be away (stopped, dead or cut off) before the copies it held are made again on the others")
	fl.IntVar(&f.repairRateMB, "repair-rate-mb", 32, "MiB/s this node sends at most to restore or move copies, so that reads and writes keep the links and disks (-1 = no limit)")
	fl.DurationVar(&f.scrubEvery, "scrub-every", 7*24*time.Hour, "how often every chunk this node stores is read back and checked against its name (a damaged one is replaced from another peer); 0 = never")
	fl.DurationVar(&f.reclaimAfter, "reclaim-after", 10*time.Minute, "how long data no file version needs any more is kept before it is deleted (a reader that opened an old version keeps reading it meanwhile)")
	fl.DurationVar(&f.keepVersions, "keep-versions", 24*time.Hour, "how long an overwritten or deleted file can be got back with 'oashare restore' (0 = delete old versions' data as soon as safe)")
	fl.DurationVar(&f.forgetAfter, "forget-after", 30*24*time.Hour, "how long a member may be away before it no longer holds back the deletion of data no file version needs (it still may come back)")
	fl.IntVar(&f.cacheMB, "cache-mb", 32, "MiB of verified chunks kept in memory for reads (0 = none: every read asks the peers)")
	fl.StringVar(&f.pprof, "pprof", "", "serve Go profiles (net/http/pprof) on this HOST:PORT, e.g. 127.0.0.1:6060; off by default")
	fl.BoolVar(&f.fuseLog, "debug-fuse", false, "log every FUSE request (very verbose)")
	fl.StringVar(&f.ui, "ui", uiDefault, "serve the dashboard on this loopback HOST:PORT ('oashare ui' prints its link), or off")
	fl.BoolVar(&f.noXattrs, "no-xattrs", false, "refuse extended attributes (ENOTSUP), sparing the kernel's request per file of ls -l and per write")
	return cmd
}

// exactArgs is cobra.ExactArgs with an error naming what is missing.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %s (got %d arguments; see '%s --help')", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return fmt.Errorf("%s takes %s (got %d arguments; see '%s --help')", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// checkFlags validates everything that needs no side effect.
func (f *mountFlags) check() error {
	if err := checkUIAddr(f.ui); err != nil {
		return err
	}
	if f.replicas < 1 {
		return fmt.Errorf("--replicas %d: must be at least 1", f.replicas)
	}
	if len(f.network) == 0 || len(f.network) > index.MaxMemberName {
		return fmt.Errorf("--network %q: must be 1 to %d bytes", f.network, index.MaxMemberName)
	}
	if f.join != "" {
		code, err := chunknet.ParseJoinCode(f.join)
		if err != nil {
			return fmt.Errorf("--join: %v", err)
		}
		f.joinCode = code
	}
	if f.joinWait <= 0 {
		return fmt.Errorf("--join-wait %v: must be positive, e.g. 2m", f.joinWait)
	}
	if _, port, err := net.SplitHostPort(f.listen); err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT, e.g. :%d or 10.0.0.5:%d", f.listen, chunknet.DefaultPort, chunknet.DefaultPort)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--listen %q: port must be a number from 0 to 65535", f.listen)
	}
	for _, p := range f.peers {
		_, port, err := net.SplitHostPort(p)
		if err != nil || port == "" {
			return fmt.Errorf("--peer %q: want HOST:PORT, e.g. 192.168.1.20:%d", p, chunknet.DefaultPort)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("--peer %q: port must be a number from 1 to 65535", p)
		}
	}
	if f.noMDNS && len(f.ifaces) > 0 {
		return errors.New("--iface selects mDNS interfaces and makes no sense with --no-mdns; drop one of them")
	}
	if !f.noMDNS {
		// A down interface is waited for (see discovery.MDNS.Run).
		if _, err := discovery.ValidateIfaces(f.ifaces); err != nil && !errors.Is(err, discovery.ErrIfaceDown) {
			return fmt.Errorf("--iface: %v (or pass --no-mdns with --peer)", err)
		}
	}
	if f.quotaMB < -1 || f.quotaMB > 1<<40 {
		return fmt.Errorf("--quota-mb %d: must be -1 (no limit), 0 (a fair share) or a number of MiB", f.quotaMB)
	}
	if f.repairAfter < time.Second || f.repairAfter > 365*24*time.Hour {
		return fmt.Errorf("--repair-after %v: must be from 1s to 8760h", f.repairAfter)
	}
	if f.repairRateMB == 0 || f.repairRateMB < -1 || f.repairRateMB > 1<<20 {
		return fmt.Errorf("--repair-rate-mb %d: must be -1 (no limit) or from 1 to 1048576", f.repairRateMB)
	}
	if f.scrubEvery != 0 && (f.scrubEvery < time.Second || f.scrubEvery > 10*365*24*time.Hour) {
		return fmt.Errorf("--scrub-every %v: must be 0 (never) or from 1s to 87600h", f.scrubEvery)
	}
	if f.reclaimAfter < time.Second || f.reclaimAfter > 365*24*time.Hour {
		return fmt.Errorf("--reclaim-after %v: must be from 1s to 8760h", f.reclaimAfter)
	}
	if f.keepVersions < 0 || f.keepVersions > 10*365*24*time.Hour {
		return fmt.Errorf("--keep-versions %v: must be 0 (none) or up to 87600h", f.keepVersions)
	}
	if f.forgetAfter < time.Minute || f.forgetAfter > 10*365*24*time.Hour {
		return fmt.Errorf("--forget-after %v: must be from 1m to 87600h", f.forgetAfter)
	}
	if f.cacheMB < 0 || f.cacheMB > 1<<20 {
		return fmt.Errorf("--cache-mb %d: must be from 0 to 1048576", f.cacheMB)
	}
	if _, err := parseLevel(f.logLevel); err != nil {
		return err
	}
	return nil
}

// checkFUSE checks what mounting needs on this machine.
func checkFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return errors.New("no /dev/fuse: load the fuse kernel module (modprobe fuse) or install the fuse3 package (apt-get install fuse3)")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found: install the fuse3 package (apt-get install fuse3)")
	}
	return nil
}

// prepareMountpoint checks dir and cleans a stale mount left by a killed
// node. It returns the absolute path.
func prepareMountpoint(dir string, log *slog.Logger) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %v", dir, err)
	}
	if m, ok := mountAt(abs); ok {
		_, statErr := os.Stat(abs)
		stale := errors.Is(statErr, syscall.ENOTCONN)
		if m.fstype == fuseType && stale {
			log.Info("cleaning up a stale oashare mount left by a node that died", "mountpoint", abs)
			if out, err := exec.Command("fusermount3", "-u", "-z", abs).CombinedOutput(); err != nil {
				return "", fmt.Errorf("mount point %s: a stale mount is left there and fusermount3 -uz failed: %s", abs, strings.TrimSpace(string(out)))
			}
		} else {
			return "", fmt.Errorf("mount point %s is already mounted (%s from %s): unmount it first (fusermount3 -u %s)", abs, m.fstype, m.source, abs)
		}
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mount point %s does not exist: create it with mkdir -p %s", abs, abs)
	case err != nil:
		return "", fmt.Errorf("mount point %s: %v", abs, err)
	case !st.IsDir():
		return "", fmt.Errorf("mount point %s is not a directory: pick a directory", abs)
	}
	d, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %v", abs, err)
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("mount point %s: %v", abs, err)
	}
	if len(names) > 0 {
		return "", fmt.Errorf("mount point %s is not empty: oashare mounts only on an empty directory (its files would be hidden)", abs)
	}
	return abs, nil
}

// lockDataDir makes sure only one node uses dir. The lock is released
// when the process exits, however it exits.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %v", dir, err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %v", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		who := ""
		if p := strings.TrimSpace(string(pid)); p != "" {
			who = " (pid " + p + ")"
		}
		return nil, fmt.Errorf("data dir %s is in use by a running node%s: stop it, or give this one its own --data", dir, who)
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}

func runMount(ctx context.Context, mountpoint string, f mountFlags) (err error) {
	level, err := parseLevel(f.logLevel)
	if err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	logOut, logDest, err := openLog(f.logFile)
	if err != nil {
		return err
	}
	defer logOut.Close()
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	stdlog.SetOutput(logOut) // what libraries log with the log package goes there too
	if f.logFile != "" {
		fmt.Fprintf(os.Stderr, "oashare: logging to %s\n", logDest)
	}
	if err := checkFUSE(); err != nil {
		return err
	}
	mnt, err := prepareMountpoint(mountpoint, log)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(f.data)
	if err != nil {
		return fmt.Errorf("--data %s: %v", f.data, err)
	}
	created := firstMissing(dataDir)
	// What the node writes is its own: the index holds every file's
	// chunks, and the identity key. New files and directories are
	// created 0600 and 0700, and whatever was there before is made so.
	syscall.Umask(0o077)
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	if err := privateTree(dataDir); err != nil {
		return fmt.Errorf("data dir %s: %v (it must be readable and writable by this user only)", dataDir, err)
	}
	defer lock.Close()
	if created != "" {
		// A mount that fails before it serves (port taken, FUSE error)
		// leaves no data directory behind, nor a node identity in it.
		defer func() {
			if err != nil {
				os.RemoveAll(created)
			}
		}()
	}

	var key ed25519.PrivateKey
	if !plainNodes {
		if key, err = loadIdentity(dataDir); err != nil {
			return err
		}
	}
	db, err := index.Open(filepath.Join(dataDir, indexDirName), index.Options{Logger: log, Identity: key})
	if err != nil {
		return fmt.Errorf("opening the index in %s: %v", dataDir, err)
	}
	defer db.Close()
	log = log.With("node", db.NodeID().Short())

	netw, member := db.Network()
	founded := false
	switch {
	case plainNodes && f.join != "":
		return errors.New("--join: this build has no members (built with -tags oashare_plain, for make bench only)")
	case plainNodes:
		netw.Name = f.network
	case member && f.join != "":
		log.Warn("this data dir belongs to a network already; --join ignored", "network", netw.Name)
	case member:
	case f.join != "":
		if netw, err = joinNetwork(ctx, db, key, f.joinCode, f, log); err != nil {
			return err
		}
		log.Info("joined a network", "network", netw.Name, "sponsor", netw.Sponsor.Short())
	default:
		if netw, err = db.CreateNetwork(f.network, memberName()); err != nil {
			return fmt.Errorf("creating a network: %v", err)
		}
		founded = true
	}

	node, err := chunknet.New(chunknet.Config{DB: db, Identity: key, Network: netw.Name, Listen: f.listen, Replicas: f.replicas, Logger: log, DataDir: dataDir, CacheBytes: cacheBytes(f.cacheMB), Quota: quotaBytes(f.quotaMB),
		RepairAfter: f.repairAfter, RepairRate: repairRate(f.repairRateMB), ScrubEvery: scrubEvery(f.scrubEvery),
		ReclaimAfter: f.reclaimAfter, KeepVersions: keepVersions(f.keepVersions), ForgetAfter: f.forgetAfter, PinsFirst: true})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("--listen %s: the port is taken (another oashare node or program uses it): pick another, e.g. --listen :%d", f.listen, chunknet.DefaultPort+1)
		}
		return fmt.Errorf("--listen %s: %v", f.listen, err)
	}
	defer node.Close()

	server, fsys, err := fusefs.MountFS(mnt, fusefs.Options{Node: node, Logger: log, FsName: dataDir, Debug: f.fuseLog, AllowOther: allowOther(), NoXattrs: f.noXattrs})
	if err != nil {
		return fmt.Errorf("mounting %s: %v", mnt, err)
	}
	unmounted := make(chan struct{})
	go func() { server.Wait(); close(unmounted) }()

	ctl, err := startControl(dataDir, node, fsys, server, mnt, netw.Name, log)
	if err != nil {
		unmount(server, mnt, log)
		return err
	}
	defer ctl.Close()
	if f.ui != "off" {
		u, err := startUI(f.ui, dataDir, ctl, log)
		switch {
		case err == nil:
			defer u.Close()
			ctl.ui.Store(u)
			log.Info("dashboard on "+u.ln.Addr().String()+" ('oashare ui' prints its link)", "ui", u.ln.Addr().String())
		case f.uiSet:
			unmount(server, mnt, log)
			return fmt.Errorf("--ui %s: %v", f.ui, err)
		default:
			log.Warn("no dashboard: "+uiDefault+" is taken (another node on this machine?); pass --ui 127.0.0.1:PORT", "err", err)
		}
	}

	dctx, stopDiscovery := context.WithCancel(context.Background())
	defer stopDiscovery()
	discDone := make(chan struct{})
	var ds discovery.Multi
	if len(f.peers) > 0 {
		ds = append(ds, discovery.Static{Addrs: f.peers})
	}
	if !f.noMDNS {
		_, port, _ := net.SplitHostPort(node.Addr())
		p, _ := strconv.Atoi(port)
		// mDNS carries an opaque tag of the network, nothing an outsider
		// can read.
		ds = append(ds, discovery.MDNS{ID: db.NodeID().String(), Network: chunknet.NetworkTag(netw.ID), Version: int(wire.Version), Port: p, Ifaces: f.ifaces, Logger: log})
	}
	go func() {
		defer close(discDone)
		err := ds.Run(dctx, func(e discovery.Event) {
			if e.Gone {
				node.ForgetAddr(e.Addr)
				return
			}
			node.AddPeerAddr(e.Addr)
		})
		if err != nil {
			log.Error("peer discovery stopped", "err", err)
		}
	}()

	if f.pprof != "" {
		if err := servePprof(f.pprof, log); err != nil {
			unmount(server, mnt, log)
			return err
		}
	}
	if founded {
		log.Info("created a new network with this node as its only member; "+addMachineHint(mnt), "network", netw.Name)
	}
	log.Info("ready", "log", logDest, "mountpoint", mnt, "listen", node.Addr(), "network", netw.Name, "members", len(db.Members()), "replicas", f.replicas, "data", dataDir, "mdns", !f.noMDNS)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case s := <-sigs:
		log.Info("stopping", "signal", s.String())
	case <-unmounted:
		log.Info("stopping: the folder was unmounted")
	case <-ctl.left:
		log.Info("stopping: this node left the network's storage ('oashare leave'); its copies are on the other peers")
	case <-ctl.detached:
		log.Info("stopping: 'oashare umount --force' detached the busy folder")
	}
	stopDiscovery()
	<-discDone
	ctl.Close()
	select {
	case <-unmounted:
	case <-ctl.detached:
	default:
		unmount(server, mnt, log)
	}
	return nil
}

// openLog opens where the log goes: path, appended to (created 0600),
// or standard error when path is empty. It returns the writer, to close
// at the end, and a description for the log itself.
func openLog(path string) (io.WriteCloser, string, error) {
	if path == "" {
		return nopCloser{os.Stderr}, "standard error", nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("--log-file %s: %v", path, err)
	}
	lf, err := os.OpenFile(abs, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("--log-file %s: %v: give a file in a directory this user can write", path, errors.Unwrap(err))
	}
	return lf, abs, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// privateTree makes dir and everything below it this user's only:
// directories 0700, other files 0600.
func privateTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			return nil // its target is not ours to change
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm() != mode {
			return os.Chmod(path, mode)
		}
		return nil
	})
}

// firstMissing returns the outermost directory on the path to dir that
// does not exist yet (dir itself or one of its parents), or "" if dir
// exists.
func firstMissing(dir string) string {
	missing := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
			return missing
		}
		missing = d
		if filepath.Dir(d) == d {
			return missing
		}
	}
}

// unmount unmounts, retrying while programs still use the folder, and
// detaches it lazily as a last resort so the process can exit.
func unmount(server interface{ Unmount() error }, mnt string, log *slog.Logger) {
	var err error
	for i := 0; i < 10; i++ {
		if err = server.Unmount(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	log.Warn("folder still busy; detaching it lazily", "mountpoint", mnt, "err", err)
	exec.Command("fusermount3", "-u", "-z", mnt).Run()
}

// cacheBytes maps --cache-mb to chunknet.Config.CacheBytes, where 0 means
// the default and a negative value means no cache.
func cacheBytes(mb int) int {
	if mb == 0 {
		return -1
	}
	return mb << 20
}

// quotaBytes maps --quota-mb to chunknet.Config.Quota.
func quotaBytes(mb int64) int64 {
	if mb <= 0 {
		return mb
	}
	return mb << 20
}

// allowOther reports whether the mount may let other users in: root may,
// others only where /etc/fuse.conf says user_allow_other.
func allowOther() bool {
	if os.Getuid() == 0 {
		return true
	}
	conf, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(conf), "\n") {
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// repairRate is --repair-rate-mb in bytes per second (-1: unpaced).
func repairRate(mb int) int64 {
	if mb < 0 {
		return -1
	}
	return int64(mb) << 20
}

// keepVersions is --keep-versions as chunknet takes it (< 0: none).
func keepVersions(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// scrubEvery is --scrub-every as chunknet takes it (< 0: never).
func scrubEvery(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
