package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/cache"
	"erismount/fetcher"
)

// publishServed publishes the tree src into tmp/server.sqlite and serves
// that store; it returns the tree's URN and the server's peer URL.
func publishServed(t *testing.T, tmp, src string) (urn, peer string) {
	t.Helper()
	server := filepath.Join(tmp, "server.sqlite")
	out, stderr, code := cli(t, "", "--store", server, "publish", src)
	if code != 0 {
		t.Fatalf("publish: %s", stderr)
	}
	return strings.Fields(out)[0], servedStore(t, server)
}

// freeAddr returns a loopback TCP address free a moment ago (for
// --metrics, which takes an address, not a listener).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// servedStore starts a block server (CoAP over TCP on loopback) over the
// SQLite store at path and returns its URL.
func servedStore(t *testing.T, path string) string {
	t.Helper()
	store, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	srv := fetcher.NewServer(store, fetcher.ServerOptions{})
	t.Cleanup(func() { srv.Close(); store.Close() })
	u, err := srv.Listen(context.Background(), "coap+tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestPinStatus(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	for p, content := range map[string]string{
		"bin/tool":         strings.Repeat("tool ", 20000),
		"share/doc/README": strings.Repeat("read me ", 9000),
		"share/a":          "same",
		"share/b":          "same",
	} {
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	content := filepath.Join(tmp, "content.sqlite")
	out, stderr, code := cli(t, "", "--store", content, "publish", src)
	if code != 0 {
		t.Fatalf("publish: %d %s", code, stderr)
	}
	urn := strings.Fields(out)[0]
	peer := servedStore(t, content)
	cacheStore := filepath.Join(tmp, "cache.sqlite")

	status := func() []statusRow {
		t.Helper()
		out, stderr, code := cli(t, "", "--store", cacheStore, "--peer", peer, "--json", "status", "--depth", "1", urn)
		if code != 0 {
			t.Fatalf("status: exit %d: %s", code, stderr)
		}
		var v struct{ Entries []statusRow }
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return v.Entries
	}
	before := status()
	if len(before) != 3 || before[0].Path != "/" || before[1].Path != "bin/" || before[2].Path != "share/" {
		t.Fatalf("status rows %+v", before)
	}
	if before[0].Local >= 1 || before[0].TotalBlocks == 0 {
		t.Fatalf("before pin: %+v", before[0])
	}
	// Human output too.
	if out, _, code := cli(t, "", "--store", cacheStore, "--peer", peer, "status", urn); code != 0 || !strings.Contains(out, "LOCAL") {
		t.Errorf("status: %d %q", code, out)
	}

	out, stderr, code = cli(t, "", "--store", cacheStore, "--peer", peer, "--json", "pin", urn)
	if code != 0 {
		t.Fatalf("pin: exit %d: %s", code, stderr)
	}
	var pinned struct{ Blocks, Bytes int64 }
	json.Unmarshal([]byte(out), &pinned)
	after := status()
	for _, r := range after {
		if r.Local != 1 || r.Blocks != r.TotalBlocks {
			t.Errorf("after pin: %+v", r)
		}
	}
	if after[0].TotalBlocks != before[0].TotalBlocks {
		t.Errorf("total changed: %d then %d", before[0].TotalBlocks, after[0].TotalBlocks)
	}
	// Offline now: no peer, still all there, and the pin is listed.
	out, stderr, code = cli(t, "", "--store", cacheStore, "--json", "status", urn)
	if code != 0 || !strings.Contains(out, `"local": 1`) {
		t.Errorf("offline status: %d %s %s", code, out, stderr)
	}
	pins, _, _ := cli(t, "", "--store", cacheStore, "--json", "pins")
	var list []cache.PinInfo
	if err := json.Unmarshal([]byte(pins), &list); err != nil || len(list) != 1 || list[0].Name != urn || list[0].Blocks != after[0].TotalBlocks-1 {
		// -1: the two identical files share their one block.
		t.Errorf("pins: %v %s (want %d blocks)", err, pins, after[0].TotalBlocks-1)
	}
	if _, stderr, code := cli(t, "", "--store", cacheStore, "unpin", urn); code != 0 {
		t.Errorf("unpin: %s", stderr)
	}
	if pins, _, _ := cli(t, "", "--store", cacheStore, "--json", "pins"); strings.Contains(pins, urn) {
		t.Errorf("still pinned after unpin: %s", pins)
	}
}
