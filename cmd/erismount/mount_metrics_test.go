package main

import (
	"bytes"
	"context"
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

	"erismount/fusefs"
)

// TestMountMetrics mounts over a real CoAP peer with --metrics, reads a
// file through the mount and scrapes what was served and fetched.
func TestMountMetrics(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skipf("needs FUSE as root: /dev/fuse %v, euid %d", err, os.Geteuid())
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.MkdirAll(filepath.Join(src, "share"), 0o755)
	// Random bytes: repeated text would share leaves (ERIS is convergent).
	content := make([]byte, 160000)
	chacha := rand.NewChaCha8([32]byte{1})
	chacha.Read(content)
	os.WriteFile(filepath.Join(src, "share", "data"), content, 0o644)
	os.WriteFile(filepath.Join(src, "share", "other"), bytes.Repeat([]byte("x"), 100000), 0o644)
	urn, peer := publishServed(t, tmp, src)

	metricsAddr := freeAddr(t)
	mnt := filepath.Join(tmp, "mnt")
	os.Mkdir(mnt, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--store", filepath.Join(tmp, "cache.sqlite"), "--peer", peer, urn, mnt, "--metrics", metricsAddr}, strings.NewReader(""), io.Discard, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fusefs.Detach(mnt)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !fusefs.IsMountPoint(mnt); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted: %s", errb.String())
		}
	}
	got, err := os.ReadFile(filepath.Join(mnt, "share", "data"))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read through the mount: %v", err)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sum := func(name string) float64 {
		var v float64
		for _, m := range families[name].GetMetric() {
			v += m.GetCounter().GetValue()
		}
		return v
	}
	if served := sum("erismount_fuse_served_bytes_total"); served < float64(len(content)) {
		t.Errorf("served %v bytes to readers, read %d", served, len(content))
	}
	if fetched := sum("erismount_peer_fetched_bytes_total"); fetched < float64(len(content)) || fetched > 3*float64(len(content))+64<<10 {
		t.Errorf("fetched %v bytes from the peer for a %d-byte file", fetched, len(content))
	}
	if hits := sum("erismount_cache_misses_total"); hits == 0 {
		t.Error("no cache misses counted on a cold mount")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("mount exited %d: %s", code, errb.String())
	}
	done <- 0
}
