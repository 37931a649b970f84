package tests

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"erismount/cache"
	"erismount/cache/s3"
	"erismount/eris"
	"erismount/erisfs"
	"erismount/tests/testenv"
)

var s3Bench = flag.Bool("s3bench", false, "run TestS3Bench: the Go toolchain tree published to S3 and SQLite, read cold through S3-backed and SQLite-backed serve processes")

// TestS3Bench is the S3 benchmark of the README, one run, ratios against
// SQLite in the same run:
//
//	go test ./tests -run TestS3Bench -s3bench -v -timeout 30m
//
// It publishes $GOROOT (the Go toolchain: many small files) into a SQLite
// store and into a bucket of a local versitygw, counts objects, bytes and
// requests, then mounts the tree with an empty cache through one
// SQLite-backed serve process, one and two S3-backed ones, and the bucket
// as a peer, and reads every file with one reader.
func TestS3Bench(t *testing.T) {
	if !*s3Bench {
		t.Skip("a benchmark: run with -s3bench")
	}
	testenv.RequireFUSE(t)
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	tree := strings.TrimSpace(string(out))
	if p := os.Getenv("ERISMOUNT_S3BENCH_TREE"); p != "" {
		tree = p // another tree to measure
	}
	srv := testenv.StartS3(t)
	srv.MakeBucket(t, "bench")
	url := srv.URL("bench", "eris")
	creds := &s3.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	ctx := context.Background()
	encOpts := erisfs.EncodeOptions{DropUnrepresentable: true}
	var report strings.Builder
	say := func(format string, args ...any) {
		fmt.Fprintf(&report, format+"\n", args...)
	}

	// Publish into SQLite.
	sqlitePath := filepath.Join(t.TempDir(), "blocks.sqlite")
	sq, err := cache.OpenSQLite(sqlitePath, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	rc, est, err := erisfs.EncodeDir(ctx, tree, counted{sq, &blockSizes{}}, encOpts)
	if err == nil {
		err = sq.Flush(ctx)
	}
	tSQLite := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	sq.Close()
	st, _ := os.Stat(sqlitePath)

	// Publish into the bucket, 64 uploads in flight.
	pubStore, err := s3.Open(url, s3.Options{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	sizes := &blockSizes{}
	up := pubStore.NewUploader(64)
	cpu0 := srv.CPUTime()
	t0 = time.Now()
	rc2, _, err := erisfs.EncodeDir(ctx, tree, counted{up, sizes}, encOpts)
	if err == nil {
		err = up.Flush(ctx)
	}
	tS3 := time.Since(t0)
	cpuS3 := srv.CPUTime() - cpu0
	if err != nil || rc2 != rc {
		t.Fatalf("publish to S3: %v (same URN: %v)", err, rc2 == rc)
	}
	up.Close()
	pub := pubStore.Stats()
	pubStore.Close()
	objects, objBytes := srv.Objects(t, "bench", "eris")

	// Publish again from another process's view: every block is there.
	again, err := s3.Open(url, s3.Options{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	up = again.NewUploader(64)
	t0 = time.Now()
	if _, _, err := erisfs.EncodeDir(ctx, tree, up, encOpts); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tAgain := time.Since(t0)
	up.Close()
	rep := again.Stats()
	again.Close()

	// Publish with conditional puts into another prefix: one request a
	// block, new or not.
	cond, err := s3.Open(srv.URL("bench", "eris-conditional")+"&put=conditional", s3.Options{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	up = cond.NewUploader(64)
	t0 = time.Now()
	if _, _, err := erisfs.EncodeDir(ctx, tree, up, encOpts); err != nil {
		t.Fatal(err)
	}
	if err := up.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tCond := time.Since(t0)
	up.Close()
	cst := cond.Stats()
	cond.Close()

	gb := float64(est.EncodedBytes) / 1e9
	say("Tree: %s, %d files, %.1f MB of content (%.1f MB encoded once), %d blocks written (%d of 1 KiB, %d of 32 KiB; duplicates included), %d distinct.",
		tree, est.Files, float64(est.Bytes)/1e6, float64(est.EncodedBytes)/1e6, est.Blocks, sizes.small.Load(), sizes.large.Load(), objects)
	say("")
	say("| publish | time | ratio | requests | objects | bytes stored |")
	say("|---|--:|--:|--:|--:|--:|")
	say("| SQLite (one file) | %v | 1 | – | 1 file | %.1f MB |", tSQLite.Round(10*time.Millisecond), float64(st.Size())/1e6)
	say("| S3, 64 uploads in flight | %v | %.2f× | %d PUT + %d HEAD | %d | %.1f MB |", tS3.Round(10*time.Millisecond), tS3.Seconds()/tSQLite.Seconds(), pub.PUTs, pub.HEADs, objects, float64(objBytes)/1e6)
	say("| S3, conditional puts (If-None-Match: *) | %v | %.2f× | %d PUT + %d HEAD | %d | – |", tCond.Round(10*time.Millisecond), tCond.Seconds()/tSQLite.Seconds(), cst.PUTs, cst.HEADs, cst.Uploaded)
	say("| S3 again (all there) | %v | %.2f× | %d PUT + %d HEAD | +0 | +0 |", tAgain.Round(10*time.Millisecond), tAgain.Seconds()/tSQLite.Seconds(), rep.PUTs, rep.HEADs)
	say("")
	say("Per GB of content encoded: %.0f objects, %.0f PUT + %.0f HEAD requests to publish new, %.0f HEAD to publish again; %.2f bytes stored per content byte. versitygw used %v of CPU for the S3 publish.",
		float64(objects)/gb, float64(pub.PUTs)/gb, float64(pub.HEADs)/gb, float64(rep.HEADs)/gb, float64(objBytes)/float64(est.EncodedBytes), cpuS3.Round(10*time.Millisecond))

	// Cold reads through serve processes.
	say("")
	say("| cold read, 1 reader, empty cache | time | MB/s | ratio to SQLite | S3 GETs | GETs per GB read | CPU: mount / serve / versitygw |")
	say("|---|--:|--:|--:|--:|--:|--:|")
	var base time.Duration
	for _, c := range []struct {
		name   string
		stores []string // one serve process per entry; "" for the bucket as a peer
	}{
		{"serve over SQLite", []string{sqlitePath}},
		{"serve over S3, 1 process", []string{url}},
		{"serve over S3, 2 processes", []string{url, url}},
		{"the bucket as a peer (--peer s3://)", []string{""}},
	} {
		var peers []string
		var serves []*testenv.Process
		for _, store := range c.stores {
			if store == "" {
				peers = append(peers, url)
				continue
			}
			p := testenv.StartEnv(t, srv.Env(), "serve", "-v", "--store", store, "--listen", "coap+tcp://127.0.0.1:0")
			serves = append(serves, p)
			peers = append(peers, testenv.FirstLine(t, p, time.Minute))
		}
		dir := t.TempDir()
		args := []string{"mount", rc.URN(), dir, "--store", filepath.Join(t.TempDir(), "empty.sqlite"), "-v"}
		for _, p := range peers {
			args = append(args, "--peer", p)
		}
		m := testenv.StartEnv(t, srv.Env(), args...)
		testenv.WaitMounted(t, m, dir, time.Minute)
		cpu := func() (mount, serve, gw time.Duration) {
			for _, p := range serves {
				serve += testenv.ProcessCPU(p.Cmd.Process.Pid)
			}
			return testenv.ProcessCPU(m.Cmd.Process.Pid), serve, srv.CPUTime()
		}
		m0, s0, g0 := cpu()
		t0 := time.Now()
		n, err := readAll(dir)
		took := time.Since(t0)
		if err != nil {
			t.Fatalf("%s: read: %v", c.name, err)
		}
		m1, s1, g1 := cpu()
		m.Interrupt(t, dir)
		gets := s3GETs(m.Stderr())
		for _, p := range serves {
			p.Signal(syscall.SIGINT)
			if code := p.Wait(time.Minute); code != 0 {
				t.Errorf("serve exited %d", code)
			}
			gets += s3GETs(p.Stderr())
		}
		if base == 0 {
			base = took
		}
		getsCol, perGB := "–", "–"
		if gets > 0 {
			getsCol, perGB = strconv.FormatInt(gets, 10), fmt.Sprintf("%.0f", float64(gets)/(float64(n)/1e9))
		}
		say("| %s | %v | %.1f | %.2f× | %s | %s | %v / %v / %v |", c.name, took.Round(10*time.Millisecond), float64(n)/1e6/took.Seconds(), took.Seconds()/base.Seconds(), getsCol, perGB,
			(m1 - m0).Round(10*time.Millisecond), (s1 - s0).Round(10*time.Millisecond), (g1 - g0).Round(10*time.Millisecond))
	}
	load, _ := os.ReadFile("/proc/loadavg")
	say("")
	say("Machine: 2 cores shared with other work (load %s); S3 = versitygw v1.8.0 (posix back end) on loopback, its files in the page cache; times are one run.", strings.Join(strings.Fields(string(load))[:3], " "))
	t.Log("\n" + report.String())
	if p := os.Getenv("ERISMOUNT_S3BENCH_OUT"); p != "" {
		os.WriteFile(p, []byte(report.String()), 0o644)
	}
}

// readAll reads every regular file under dir, in walk order, and returns
// the bytes read.
func readAll(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		k, err := io.Copy(io.Discard, f)
		n += k
		return err
	})
	return n, err
}

var getsRE = regexp.MustCompile(`msg="s3 requests" .*?GET=(\d+)`)

// s3GETs sums the GET counts a process logged for its S3 stores.
func s3GETs(stderr string) int64 {
	var n int64
	for _, m := range getsRE.FindAllStringSubmatch(stderr, -1) {
		k, _ := strconv.ParseInt(m[1], 10, 64)
		n += k
	}
	return n
}

// blockSizes counts the blocks written, by size.
type blockSizes struct{ small, large atomic.Int64 }

// counted is a store that counts the blocks put through it.
type counted struct {
	eris.BlockStore
	n *blockSizes
}

func (c counted) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	if len(b) == eris.BlockSize1K {
		c.n.small.Add(1)
	} else {
		c.n.large.Add(1)
	}
	return c.BlockStore.PutBlock(ctx, ref, b)
}
