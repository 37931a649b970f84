package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"erismount/cache"
	"erismount/eris"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

// TestMountSmallCache mounts a tree three times larger than the cache
// (--cache-size 4MiB) and reads all of it through the mount: file blocks
// are evicted, nothing is refused for the cap and no warning is logged per
// block, while the mount pin keeps exactly the tree's index.
func TestMountSmallCache(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skipf("needs FUSE as root: /dev/fuse %v, euid %d", err, os.Geteuid())
	}
	ctx := context.Background()
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	chacha := rand.NewChaCha8([32]byte{5})
	files := map[string][]byte{}
	for d := range 4 {
		for f := range 6 {
			// Random bytes: repeated text would share blocks (ERIS is convergent).
			b := make([]byte, 500<<10+d*1000+f)
			chacha.Read(b)
			rel := filepath.Join(fmt.Sprintf("dir%d", d), fmt.Sprintf("file%d", f))
			files[rel] = b
			os.MkdirAll(filepath.Join(src, filepath.Dir(rel)), 0o755)
			if err := os.WriteFile(filepath.Join(src, rel), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	urn, peer := publishServed(t, tmp, src)

	metricsAddr := freeAddr(t)
	mnt := filepath.Join(tmp, "mnt")
	os.Mkdir(mnt, 0o755)
	store := filepath.Join(tmp, "cache.sqlite")
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var errb testenv.SyncBuffer
	go func() {
		done <- run(mctx, []string{"--store", store, "--cache-size", "4MiB", "--peer", peer, urn, mnt, "--metrics", metricsAddr}, strings.NewReader(""), io.Discard, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fusefs.Detach(mnt)
		}
	})
	for deadline := time.Now().Add(20 * time.Second); !fusefs.IsMountPoint(mnt); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted: %s", errb.String())
		}
	}
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(mnt, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s through the mount: %v", rel, err)
		}
	}
	// Blocks are written to the store in the background: wait until all
	// that were fetched are (or were refused).
	var metrics map[string]float64
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		metrics = scrape(t, metricsAddr)
		if metrics["erismount_cache_writebacks_total"] >= metrics["erismount_peer_blocks_total"] && metrics["erismount_cache_disk_evictions_total"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Logf("metrics: %v", metrics)
	if n := metrics["erismount_cache_disk_evictions_total"]; n == 0 {
		t.Errorf("no evictions reading %d files of 500 KiB through a 4 MiB cache", len(files))
	}
	for _, name := range []string{"erismount_cache_disk_full_total", "erismount_cache_disk_write_failures_total", "erismount_cache_disk_degraded"} {
		if n := metrics[name]; n != 0 {
			t.Errorf("%s = %v; want 0", name, n)
		}
	}
	if n := strings.Count(errb.String(), "level=WARN"); n != 0 {
		t.Errorf("%d warnings while reading through the mount:\n%s", n, errb.String())
	}

	// The mount pin holds the index, all of it stored, and nothing else.
	pinsOut, stderr, code := cli(t, "", "--store", store, "--json", "pins")
	if code != 0 {
		t.Fatalf("pins: exit %d: %s", code, stderr)
	}
	var pins []cache.PinInfo
	if err := json.Unmarshal([]byte(pinsOut), &pins); err != nil {
		t.Fatalf("pins --json: %v: %s", err, pinsOut)
	}
	rc, err := eris.ParseURN(urn)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cache.OpenSQLite(filepath.Join(tmp, "server.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var index int64
	if err := eris.Walk(ctx, rc, s, func(eris.Ref, int) error { index++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(pins) != 1 || !pins[0].Mount || pins[0].Tagged != index || pins[0].Blocks != index {
		t.Errorf("pins %+v; want one mount pin of the %d index blocks, all stored", pins, index)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Errorf("mount exited %d: %s", code, errb.String())
	}
	done <- 0
}

// scrape reads the counters and gauges of a metrics endpoint, summed over
// their labels.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for name, f := range families {
		for _, x := range f.GetMetric() {
			m[name] += x.GetCounter().GetValue() + x.GetGauge().GetValue()
		}
	}
	return m
}

// TestDamagedStore: a store file damaged on disk does not stop `pins` or
// `status`: the first command to open it moves it aside, says so once on
// stderr with the pins that were lost, and goes on with a fresh store.
func TestDamagedStore(t *testing.T) {
	tmp := t.TempDir()
	store := filepath.Join(tmp, "blocks.sqlite")
	in := filepath.Join(tmp, "in")
	os.WriteFile(in, bytes.Repeat([]byte("pinned by encode "), 10000), 0o644)
	out, stderr, code := cli(t, "", "--store", store, "encode", in)
	if code != 0 {
		t.Fatalf("encode: %s", stderr)
	}
	urn := strings.TrimSpace(out)
	// Garbage over the root page of the access-time index: the file opens
	// but SQLite finds it malformed; the pins table is still readable.
	s, err := cache.OpenSQLite(store, cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	root := rootPageOf(t, store, "blocks_atime")
	f, err := os.OpenFile(store, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 4096), (root-1)*16384)
	f.Close()

	out, stderr, code = cli(t, "", "--store", store, "pins")
	if code != 0 {
		t.Fatalf("pins on a damaged store: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "damaged") || !strings.Contains(stderr, "blocks.sqlite.damaged-") || !strings.Contains(stderr, urn) {
		t.Errorf("pins should say the store was damaged, where it went and that %s was lost; stderr:\n%s", urn, stderr)
	}
	if strings.Contains(out, urn) {
		t.Errorf("pins lists %s from the damaged file:\n%s", urn, out)
	}
	aside, _ := filepath.Glob(store + ".damaged-*[0-9Z]")
	if len(aside) != 1 {
		t.Errorf("files moved aside: %v; want one", aside)
	}
	// Once replaced, nothing more is said.
	_, stderr, code = cli(t, "", "--store", store, "pins")
	if code != 0 || strings.Contains(stderr, "damaged") {
		t.Errorf("pins again: exit %d: %s", code, stderr)
	}

	// status on a damaged store says the same and goes on (the blocks are
	// gone with the file and no peer is given: exit 3, not 1).
	out, stderr, code = cli(t, "", "--store", store, "encode", in)
	if code != 0 {
		t.Fatalf("encode: %s", stderr)
	}
	s, err = cache.OpenSQLite(store, cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	f, _ = os.OpenFile(store, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 25), 0) // the header
	f.Close()
	_, stderr, code = cli(t, "", "--store", store, "status", strings.TrimSpace(out))
	if code != exitUnavailable || !strings.Contains(stderr, "damaged") {
		t.Errorf("status on a damaged store: exit %d (want %d): %s", code, exitUnavailable, stderr)
	}
}

// rootPageOf returns the root page of a table or index of an SQLite file.
func rootPageOf(t *testing.T, path, name string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var root int64
	if err := db.QueryRow(`SELECT rootpage FROM sqlite_schema WHERE name = ?`, name).Scan(&root); err != nil {
		t.Fatal(err)
	}
	return root
}
