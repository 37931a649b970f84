package fusefs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"erismount/eris"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

// logBuffer collects log output for a test to inspect.
type logBuffer struct{ testenv.SyncBuffer }

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// checkLoggedOnce fails if a block reference appears in more than one line.
func checkLoggedOnce(t *testing.T, logs string) {
	t.Helper()
	seen := map[string]int{}
	for _, line := range strings.Split(logs, "\n") {
		for _, w := range strings.FieldsFunc(line, func(r rune) bool { return !('A' <= r && r <= 'Z' || '2' <= r && r <= '7') }) {
			if len(w) == eris.RefLen {
				seen[w]++
			}
		}
	}
	for ref, n := range seen {
		if n > 1 {
			t.Errorf("block %s logged %d times, want once:\n%s", ref, n, logs)
		}
	}
}

const bigFile = "data/size-01048579"

// TestDeadPeer: when the block source stops answering in the middle of
// use, a read fails with EIO close to the deadline, the cause is logged
// once per block, the rest of the mount keeps working, and it unmounts.
func TestDeadPeer(t *testing.T) {
	testenv.RequireFUSE(t)
	for _, tc := range []struct {
		name  string
		fault testenv.Fault
	}{
		{"dead peer", testenv.Dead},         // honours the deadline
		{"deaf getter", testenv.Deaf},       // ignores it: abandoned after a grace period
		{"missing blocks", testenv.Missing}, // fails at once
	} {
		t.Run(tc.name, func(t *testing.T) {
			const deadline = 400 * time.Millisecond
			p := publish(t, testenv.Sample())
			var logs logBuffer
			srv := testenv.Mount(t, p.tree, fusefs.Options{Deadline: deadline, Logger: logs.logger()})
			file := filepath.Join(srv.Dir(), bigFile)
			if _, err := os.Stat(file); err != nil {
				t.Fatal(err)
			}
			p.faulty.Set(tc.fault)
			for i := range 2 {
				start := time.Now()
				_, err := os.ReadFile(file)
				took := time.Since(start)
				t.Logf("read %d: %v after %v (deadline %v)", i, err, took, deadline)
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("read with a %s: %v, want EIO", tc.name, err)
				}
				// Not a timing threshold: a hang check. The read must
				// end near the deadline, not wait for the peer.
				if took > deadline+5*time.Second {
					t.Errorf("read took %v, deadline %v", took, deadline)
				}
			}
			// Another file needing blocks fails the same way, and nothing
			// is left blocked once the fault is gone.
			p.faulty.Set(testenv.Healthy)
			want, _ := os.ReadFile(filepath.Join(p.src, bigFile))
			got, err := os.ReadFile(file)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read after the fault: %d bytes, %v", len(got), err)
			}
			testenv.CompareDirs(t, p.src, srv.Dir())
			st := srv.Stats()
			t.Logf("stats: %+v", st)
			if st.EIO == 0 {
				t.Errorf("no EIO counted: %+v", st)
			}
			if tc.fault == testenv.Deaf && st.Abandoned == 0 {
				t.Errorf("deaf getter: no operation abandoned: %+v", st)
			}
			if !strings.Contains(logs.String(), "read failed") {
				t.Errorf("nothing logged:\n%s", logs.String())
			}
			checkLoggedOnce(t, logs.String())
		})
	}
}

// TestCorruptPeer: a source that flips bits never gets a wrong byte to a
// reader: every read of content it served fails with EIO, the corruption
// is logged as an error, and the same reads succeed from a healthy one.
func TestCorruptPeer(t *testing.T) {
	testenv.RequireFUSE(t)
	spec := testenv.Sample()
	p := publish(t, spec)
	var logs logBuffer
	srv := testenv.Mount(t, p.tree, fusefs.Options{Logger: logs.logger()})
	// Sizes first (a lookup fetches the end of each file), from a
	// healthy source; then the contents from a lying one.
	for _, path := range spec.Paths() {
		if _, err := os.Lstat(filepath.Join(srv.Dir(), path)); err != nil {
			t.Fatal(err)
		}
	}
	p.faulty.Set(testenv.Corrupt)
	for _, path := range spec.Paths() {
		n := spec[path]
		if !n.Kind.IsFile() || len(n.Content) == 0 {
			continue
		}
		got, err := os.ReadFile(filepath.Join(srv.Dir(), path))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s from a corrupting source: %d bytes, %v; want EIO", path, len(got), err)
		}
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "corrupt") {
		t.Errorf("corruption not logged as an error:\n%s", logs.String())
	}
	checkLoggedOnce(t, logs.String())
	p.faulty.Set(testenv.Healthy)
	testenv.CompareDirs(t, p.src, srv.Dir())
}

// TestMissingBlock: one leaf missing from a file fails the reads that need
// it, logged once naming the block, while the rest of the file and the
// tree read fine.
func TestMissingBlock(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	p := publish(t, testenv.Sample())
	e, err := p.tree.Lookup(bigFile)
	if err != nil {
		t.Fatal(err)
	}
	var leaves []eris.Ref
	if err := eris.Walk(ctx, e.Capability(), p.store, func(ref eris.Ref, level int) error {
		if level == 0 {
			leaves = append(leaves, ref)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	gone := leaves[len(leaves)/2] // bytes [k·32 KiB, (k+1)·32 KiB) with k = len/2
	p.store.Delete(gone)
	var logs logBuffer
	srv := testenv.Mount(t, p.tree, fusefs.Options{Logger: logs.logger(), Readahead: -1})
	file := filepath.Join(srv.Dir(), bigFile)
	for range 2 {
		if _, err := os.ReadFile(file); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read of a file missing a block: %v, want EIO", err)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, _ := os.ReadFile(filepath.Join(p.src, bigFile))
	head := make([]byte, 64<<10)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, want[:len(head)]) {
		t.Errorf("the start of the file, far from the missing block: %v", err)
	}
	if !strings.Contains(logs.String(), gone.String()) {
		t.Errorf("missing block %s not logged:\n%s", gone, logs.String())
	}
	checkLoggedOnce(t, logs.String())
}
