package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"erismount/fusefs"
	"erismount/tests/testenv"
)

// TestMountServesWhatItHolds mounts a tree with --listen and has other
// nodes get the whole tree from the mounting node alone: before it has
// read the second file that fails with exit 3 (the node does not relay to
// its peer), after it read it the tree comes out byte for byte.
func TestMountServesWhatItHolds(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skipf("needs FUSE as root: /dev/fuse %v, euid %d", err, os.Geteuid())
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.MkdirAll(src, 0o755)
	files := map[string][]byte{"a": make([]byte, 150000), "b": make([]byte, 90000)}
	chacha := rand.NewChaCha8([32]byte{2})
	for name, content := range files {
		chacha.Read(content)
		if err := os.WriteFile(filepath.Join(src, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	urn, publisher := publishServed(t, tmp, src)

	mnt := filepath.Join(tmp, "mnt")
	os.Mkdir(mnt, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stdout, errb testenv.SyncBuffer
	go func() {
		done <- run(ctx, []string{"--json", "--store", filepath.Join(tmp, "node.sqlite"), "--peer", publisher, "mount", urn, mnt, "--listen", "coap://127.0.0.1:0"}, strings.NewReader(""), &stdout, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fusefs.Detach(mnt)
		}
	})
	var info struct{ Listen []string }
	for deadline := time.Now().Add(20 * time.Second); len(info.Listen) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted and listening: %s %s", stdout.String(), errb.String())
		}
		json.Unmarshal([]byte(stdout.String()), &info)
	}
	node := info.Listen[0]
	if !strings.HasPrefix(node, "coap://127.0.0.1:") {
		t.Fatalf("listening on %q", node)
	}
	read := func(name string) {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, files[name]) {
			t.Fatalf("read %s through the mount: %v", name, err)
		}
	}
	read("a")
	_, stderr, code := cli(t, "", "--store", filepath.Join(tmp, "other1.sqlite"), "--peer", node, "get", urn, filepath.Join(tmp, "got1"))
	if code != exitUnavailable {
		t.Fatalf("get from a node that has read only one file: exit %d, want %d (%s)", code, exitUnavailable, stderr)
	}
	read("b")
	_, stderr, code = cli(t, "", "--store", filepath.Join(tmp, "other2.sqlite"), "--peer", node, "get", urn, filepath.Join(tmp, "got2"))
	if code != 0 {
		t.Fatalf("get from a node that has read the whole tree: exit %d: %s", code, stderr)
	}
	for name, content := range files {
		got, err := os.ReadFile(filepath.Join(tmp, "got2", name))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("%s got from the node: %v", name, err)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("mount exit %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mount did not end")
	}
}
