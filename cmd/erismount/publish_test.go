package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"erismount/cache"
	"erismount/narinfo/nar"
)

// narDump is the nar of the tree at p.
func narDump(t *testing.T, p string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := nar.WriteFS(context.Background(), &b, nar.DirFS(p)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestPublishGet(t *testing.T) {
	tmp := t.TempDir()
	store := filepath.Join(tmp, "blocks.sqlite")
	src := filepath.Join(tmp, "src")
	for p, content := range map[string]string{
		"bin/hello":              "#!/bin/sh\necho hello\n",
		"share/doc/README":       strings.Repeat("read me ", 5000),
		"share/doc/COPYING":      "same",
		"share/licenses/COPYING": "same",
	} {
		full := filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(src, "bin/hello"), 0o755)
	os.Symlink("share/doc", filepath.Join(src, "doc"))

	out, stderr, code := cli(t, "", "--store", store, "--json", "publish", src)
	if code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	var res struct {
		URN        string `json:"urn"`
		Files      int    `json:"files"`
		DedupFiles int    `json:"dedup_files"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Files != 4 || res.DedupFiles != 1 {
		t.Fatalf("publish --json: %s (%v)", out, err)
	}
	// The nar of the same tree publishes to the same URN, from stdin.
	out, stderr, code = cli(t, string(narDump(t, src)), "--store", store, "publish", "--nar", "-")
	if code != 0 || strings.TrimSpace(out) != res.URN {
		t.Fatalf("publish --nar -: exit %d, %q, want %s: %s", code, out, res.URN, stderr)
	}

	dest := filepath.Join(tmp, "dest")
	out, stderr, code = cli(t, "", "--store", store, "get", res.URN, dest)
	if code != 0 || strings.TrimSpace(out) != dest {
		t.Fatalf("get: exit %d, %q: %s", code, out, stderr)
	}
	if !bytes.Equal(narDump(t, dest), narDump(t, src)) {
		t.Error("the tree got differs from the one published")
	}
	if info, err := os.Stat(filepath.Join(dest, "bin/hello")); err != nil || info.Mode() != 0o555 {
		t.Errorf("bin/hello: %v, %v", info, err)
	}
	// Never overwrites.
	_, stderr, code = cli(t, "", "--store", store, "get", res.URN, dest)
	if code != exitUsage || !strings.Contains(stderr, "destination exists") {
		t.Errorf("get onto an existing DEST: exit %d: %s", code, stderr)
	}
	// Offline from an empty store: blocks unavailable.
	_, stderr, code = cli(t, "", "--store", filepath.Join(tmp, "empty.sqlite"), "get", res.URN, filepath.Join(tmp, "d2"))
	if code != exitUnavailable {
		t.Errorf("get from an empty store: exit %d: %s", code, stderr)
	}
	if _, err := os.Lstat(filepath.Join(tmp, "d2")); err == nil {
		t.Error("a failed get left DEST behind")
	}
	chmodTree(dest)
}

func TestPublishUnrepresentable(t *testing.T) {
	tmp := t.TempDir()
	store := filepath.Join(tmp, "blocks.sqlite")
	src := filepath.Join(tmp, "src")
	os.MkdirAll(filepath.Join(src, "empty"), 0o755)
	os.WriteFile(filepath.Join(src, "file"), []byte("x"), 0o644)
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	_, stderr, code := cli(t, "", "--store", store, "publish", src)
	if code != exitUsage || !strings.Contains(stderr, `"empty": empty directory`) {
		t.Errorf("publish: exit %d: %s", code, stderr)
	}
	out, stderr, code := cli(t, "", "--store", store, "publish", "--drop-unrepresentable", src)
	if code != 0 || !strings.HasPrefix(out, "urn:eris:") || !strings.Contains(stderr, "fifo") || !strings.Contains(stderr, "WARN") {
		t.Errorf("publish --drop-unrepresentable: exit %d, %q: %s", code, out, stderr)
	}
	for _, args := range [][]string{
		{"publish"},
		{"publish", src, "--nar", "x.nar"},
		{"publish", "/nonexistent"},
		{"publish", "--block-size", "4096", src},
		{"get", "urn:eris:XYZ", filepath.Join(tmp, "x")},
	} {
		if _, stderr, code := cli(t, "", append([]string{"--store", store}, args...)...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, code, exitUsage, stderr)
		}
	}
}

// chmodTree makes a written tree removable again by t.TempDir's cleanup
// when the tests run as an ordinary user.
func chmodTree(p string) {
	filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o755)
		}
		return nil
	})
}

// storeBlocks is the number of blocks committed in the SQLite store at p.
func storeBlocks(t *testing.T, p string) int64 {
	t.Helper()
	db, err := cache.OpenSQLite(p, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

// TestPublishNarMalformed: a malformed nar — damaged in the middle, or cut
// short — exits 2 (malformed input) naming the problem, and the blocks the
// failed publish had written are removed again; blocks it shares with a
// tree published before stay, and that tree still reads.
func TestPublishNarMalformed(t *testing.T) {
	tmp := t.TempDir()
	store := filepath.Join(tmp, "blocks.sqlite")
	shared := testRandom(1, 200<<10)
	before := filepath.Join(tmp, "before")
	os.MkdirAll(before, 0o755)
	os.WriteFile(filepath.Join(before, "shared"), shared, 0o644)
	out, stderr, code := cli(t, "", "--store", store, "publish", before)
	if code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	urn := strings.TrimSpace(out)
	kept := storeBlocks(t, store)

	src := filepath.Join(tmp, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), shared, 0o644)
	os.WriteFile(filepath.Join(src, "b"), testRandom(2, 300<<10), 0o644)
	os.WriteFile(filepath.Join(src, "c"), []byte("last"), 0o644)
	good := narDump(t, src)
	at := bytes.Index(good, []byte("last")) // file c's content, after a and b
	damaged := append([]byte(nil), good...)
	copy(damaged[at-40:], "garbage!") // c's entry tokens
	for _, tc := range []struct{ name, nar string }{
		{"damaged", string(damaged)},
		{"cut short", string(good[:at])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := cli(t, tc.nar, "--store", store, "publish", "--nar", "-")
			if code != exitUsage || !strings.Contains(stderr, "malformed") {
				t.Errorf("exit %d, %s; want %d (malformed input)", code, stderr, exitUsage)
			}
			if n := storeBlocks(t, store); n != kept {
				t.Errorf("the store holds %d blocks after a failed publish, %d before it", n, kept)
			}
		})
	}
	// The same as a store item with a signed narinfo.
	keys := filepath.Join(tmp, "keys")
	if _, stderr, code := cli(t, "", "narinfo", "keygen", keys); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	bad := filepath.Join(tmp, "bad.nar")
	os.WriteFile(bad, damaged, 0o644)
	_, stderr, code = cli(t, "", "--store", store, "publish", "--key", filepath.Join(keys, "signing-key.sec"),
		"--store-path", "/gnu/store/1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-bad-1.0", "--nar", bad, "--references", "none")
	if code != exitUsage || !strings.Contains(stderr, "malformed") {
		t.Errorf("store item from a damaged nar: exit %d, %s; want %d (malformed input)", code, stderr, exitUsage)
	}
	if n := storeBlocks(t, store); n != kept {
		t.Errorf("the store holds %d blocks after a failed store-item publish, %d before it", n, kept)
	}
	dest := filepath.Join(tmp, "dest")
	if _, stderr, code := cli(t, "", "--store", store, "get", urn, dest); code != 0 {
		t.Fatalf("get the tree published before: exit %d: %s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "shared")); !bytes.Equal(got, shared) {
		t.Errorf("the tree published before lost content")
	}
}

// testRandom is n bytes of a deterministic random stream.
func testRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
