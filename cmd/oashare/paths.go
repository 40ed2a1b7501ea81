package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultDataDir is $XDG_DATA_HOME/oashare, else ~/.local/share/oashare.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "oashare")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "oashare")
	}
	return filepath.Join(home, ".local", "share", "oashare")
}

const (
	controlSocketName = "control.sock"
	lockFileName      = "oashare.lock"
	indexDirName      = "index"
	fuseType          = "fuse.oashare"
)

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	point  string
	fstype string
	source string
}

func unescapeMount(s string) string {
	// mountinfo escapes space, tab, newline and backslash as \ooo.
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readMounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, mountInfo{point: unescapeMount(fields[4]), fstype: fields[sep+1], source: unescapeMount(fields[sep+2])})
	}
	return out, sc.Err()
}

// mountAt returns the mount whose mount point is exactly dir.
func mountAt(dir string) (mountInfo, bool) {
	ms, err := readMounts()
	if err != nil {
		return mountInfo{}, false
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].point == dir {
			return ms[i], true
		}
	}
	return mountInfo{}, false
}

// oashareMountOf finds the oashare mount that contains path and returns
// its mount point and data directory (the mount's source).
func oashareMountOf(path string) (point, dataDir string, err error) {
	ms, err := readMounts()
	if err != nil {
		return "", "", err
	}
	best := -1
	for i, m := range ms {
		if m.fstype != fuseType {
			continue
		}
		if path == m.point || strings.HasPrefix(path, strings.TrimSuffix(m.point, "/")+"/") {
			if best < 0 || len(m.point) >= len(ms[best].point) {
				best = i
			}
		}
	}
	if best < 0 {
		return "", "", fmt.Errorf("%s is not inside an oashare mount (see 'oashare mount --help'), or pass --data", path)
	}
	return ms[best].point, ms[best].source, nil
}

// mountPointOf resolves path, which must be an oashare mount point
// itself (not a folder inside one), to that mount point and the data
// directory of the node serving it.
func mountPointOf(path string) (point, dataDir string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", err
	}
	point, dataDir, err = oashareMountOf(abs)
	if err != nil {
		return "", "", err
	}
	if point != abs {
		return "", "", fmt.Errorf("%s is inside the mount %s, not its mount point: give the mount point", abs, point)
	}
	return point, dataDir, nil
}
