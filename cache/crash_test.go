package cache_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"erismount/cache"
)

// TestCrash kills a process writing blocks (childCrash) with SIGKILL in the
// middle of a batch, then reopens the file: SQLite's integrity check
// passes, every stored block verifies, the totals are right, every batch
// the child saw committed is there, and the child's mount pin is gone.
// Each round reopens the file the previous crash left. -long runs more
// rounds.
func TestCrash(t *testing.T) {
	rounds := 3
	if *long {
		rounds = 30
	}
	self, err := os.Executable()
	if err != nil {
		t.Skipf("cannot find the test binary to run the writer child: %v", err)
	}
	const batch = 200
	path := filepath.Join(t.TempDir(), "crash.sqlite")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	var committed []int
	next := 0
	for round := range rounds {
		cmd := exec.CommandContext(t.Context(), self)
		cmd.Env = append(os.Environ(), childEnv+"=crash", childPath+"="+path,
			fmt.Sprintf("%s=%d", childBatch, batch), fmt.Sprintf("%s=%d", childFirst, next))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		// Kill once the child is putting its third batch or later, at a
		// random moment within the time a batch has taken so far.
		killAt := next + 2 + r.IntN(3)
		inFlight := -1
		killed := false
		var began time.Time
		var took time.Duration
		for lines.Scan() {
			var n int
			if _, err := fmt.Sscanf(lines.Text(), "committed %d", &n); err == nil {
				committed = append(committed, n)
				continue
			}
			if _, err := fmt.Sscanf(lines.Text(), "begin %d", &n); err != nil {
				t.Fatalf("child said %q", lines.Text())
			}
			inFlight = n
			if !began.IsZero() {
				took = max(took, time.Since(began))
			}
			began = time.Now()
			if n >= killAt && !killed {
				time.Sleep(time.Duration(r.Int64N(int64(took) + 1)))
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL; stderr:\n%s", round, err, stderr.String())
		}
		next = inFlight + 1
		partial := checkAfterCrash(t, path, committed, inFlight, batch)
		t.Logf("round %d: killed in batch %d with %d of its %d blocks stored; %d batches committed so far", round, inFlight, partial, batch, len(committed))
	}
}

// checkAfterCrash opens the file a killed writer left and checks it. It
// returns how many blocks of the batch in flight made it.
func checkAfterCrash(t *testing.T, path string, committed []int, inFlight, batch int) int {
	t.Helper()
	ctx := context.Background()
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatalf("reopening after the crash: %v", err)
	}
	defer s.Close()
	res, err := s.Check(ctx) // integrity_check, every block verified, totals recounted
	if err != nil {
		t.Fatalf("after the crash: %v", err)
	}
	if res.Damaged+res.Missing != 0 {
		t.Fatalf("after the crash: %d damaged and %d missing blocks", res.Damaged, res.Missing)
	}
	for _, n := range committed {
		for _, b := range crashBatch(n, batch) {
			got, err := s.GetBlock(ctx, b.ref)
			if err != nil || string(got) != string(b.b) {
				t.Fatalf("block %s of committed batch %d: %d bytes, %v", b.ref.Str(), n, len(got), err)
			}
		}
	}
	if pins, err := s.Pins(ctx); err != nil || len(pins) != 0 {
		t.Fatalf("after the crash, pins %+v (%v); want the dead child's mount pin dropped", pins, err)
	}
	partial := 0
	for _, b := range crashBatch(inFlight, batch) {
		if has(t, s, b.ref) {
			partial++
		}
	}
	return partial
}
