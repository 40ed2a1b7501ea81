// Command oashare-visdelay measures how soon a change made on one peer is
// seen on another: it overwrites a file under -w (one peer's mount) again
// and again with new bytes, and after each close (or fsync and close)
// reads the same file under -r (another peer's mount) until it holds
// exactly those bytes.
//
//	oashare-visdelay -w DIR -r DIR [-n 200] [-fsync] [-size 4096]
//
// It prints one line of CSV per figure, metric,value,unit:
//
//	now      % of changes the reader saw on its first read, right after close returned
//	p50, p99, max   ms from close returning to the reader seeing the bytes
//	op_p50, op_p99  ms the writer's open, write, (fsync,) close took
//
// The reader polls every -poll (default 1ms), so delays are rounded up to
// that. A change not seen within -timeout is an error.
package main

import (
	"bytes"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

func main() {
	w := flag.String("w", "", "directory on the writing peer")
	r := flag.String("r", "", "the same directory on the reading peer")
	n := flag.Int("n", 200, "changes to measure")
	size := flag.Int("size", 4096, "bytes per change")
	sync := flag.Bool("fsync", false, "fsync before close")
	poll := flag.Duration("poll", time.Millisecond, "how often the reader looks")
	timeout := flag.Duration("timeout", 30*time.Second, "longest a change may take to be seen")
	flag.Parse()
	if *w == "" || *r == "" || *n < 1 || *size < 16 {
		fmt.Fprintln(os.Stderr, "oashare-visdelay: -w and -r are required, -n ≥ 1, -size ≥ 16 (see -help)")
		os.Exit(2)
	}
	if err := run(*w, *r, *n, *size, *sync, *poll, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "oashare-visdelay:", err)
		os.Exit(1)
	}
}

func run(wdir, rdir string, n, size int, sync bool, poll, timeout time.Duration) error {
	name := fmt.Sprintf("visdelay-%d", os.Getpid())
	wpath, rpath := filepath.Join(wdir, name), filepath.Join(rdir, name)
	defer os.Remove(wpath)
	var delays, ops []time.Duration
	now := 0
	buf := make([]byte, size)
	for i := range n {
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		start := time.Now()
		if err := write(wpath, buf, sync); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		closed := time.Now()
		ops = append(ops, closed.Sub(start))
		first := true
		for {
			got, err := os.ReadFile(rpath)
			if err == nil && bytes.Equal(got, buf) {
				if first {
					now++
				}
				delays = append(delays, time.Since(closed))
				break
			}
			first = false
			if time.Since(closed) > timeout {
				return fmt.Errorf("change %d not seen on the reading side after %v (last read: %d bytes, %v)", i, timeout, len(got), err)
			}
			time.Sleep(poll)
		}
	}
	fmt.Printf("now,%.1f,%%\n", 100*float64(now)/float64(n))
	fmt.Printf("p50,%.3f,ms\n", ms(quantile(delays, 0.50)))
	fmt.Printf("p99,%.3f,ms\n", ms(quantile(delays, 0.99)))
	fmt.Printf("max,%.3f,ms\n", ms(quantile(delays, 1)))
	fmt.Printf("op_p50,%.3f,ms\n", ms(quantile(ops, 0.50)))
	fmt.Printf("op_p99,%.3f,ms\n", ms(quantile(ops, 0.99)))
	return nil
}

// write replaces the content of path with b, as an editor's plain save
// does: open with O_TRUNC, write, optionally fsync, close.
func write(path string, b []byte, sync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
