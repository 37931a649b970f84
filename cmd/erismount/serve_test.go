package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"erismount/cache"
	"erismount/eris"
	"erismount/tests/testenv"
)

// TestServeBinary runs the built erismount serve over a SQLite store and
// talks to it with libcoap's coap-client-notls: GET over UDP (block-wise)
// and TCP returns the stored bytes, a PUT is stored only when its reference
// matches, and SIGINT ends the server cleanly.
func TestServeBinary(t *testing.T) {
	client, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Skip("coap-client-notls not found in PATH (Debian package libcoap3-bin)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "erismount")
	if out, err := exec.Command("go", "build", "-o", bin, "erismount/cmd/erismount").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "serve", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "allow-put") {
		t.Skip("this erismount has no serve command yet (newServeCmd is not in subcommands)")
	}
	storePath := filepath.Join(dir, "blocks.sqlite")
	blocks := [][]byte{bytes.Repeat([]byte("1 KiB block "), 1024)[:eris.BlockSize1K], bytes.Repeat([]byte("32 KiB block "), 4096)[:eris.BlockSize32K]}
	store, err := cache.OpenSQLite(storePath, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if err := store.PutBlock(context.Background(), eris.RefOf(b), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "--store", storePath, "serve", "--allow-put",
		"--listen", "coap://127.0.0.1:0", "--listen", "coap+tcp://127.0.0.1:0")
	cmd.Env = testenv.Env(t)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	sc := bufio.NewScanner(stdout)
	var urls []string
	for len(urls) < 2 && sc.Scan() {
		urls = append(urls, sc.Text())
	}
	go func() { waitErr = cmd.Wait(); close(exited) }()
	if len(urls) < 2 {
		t.Fatalf("serve printed %q", urls)
	}
	coap := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, client, append([]string{"-B", "20"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, u := range urls {
		for i, b := range blocks {
			out := filepath.Join(dir, "got")
			if msg, err := coap("-m", "get", "-o", out, u+"/blocks?"+eris.RefOf(b).String()); err != nil {
				t.Fatalf("GET block %d from %s: %v: %s", i, u, err, msg)
			}
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, b) {
				t.Fatalf("GET block %d from %s: %d bytes that differ from the %d stored", i, u, len(got), len(b))
			}
		}
	}
	// PUT: a new 32 KiB block under a wrong reference is refused, under its
	// own it is stored, and then served.
	nb := bytes.Repeat([]byte("uploaded "), 4096)[:eris.BlockSize32K]
	file := filepath.Join(dir, "new")
	if err := os.WriteFile(file, nb, 0o600); err != nil {
		t.Fatal(err)
	}
	if msg, _ := coap("-m", "put", "-f", file, urls[0]+"/blocks?"+eris.RefOf(blocks[0]).String()); !strings.Contains(msg, "4.00") {
		t.Fatalf("PUT under a wrong reference: client said %q, want 4.00", msg)
	}
	if msg, err := coap("-m", "put", "-f", file, urls[0]+"/blocks?"+eris.RefOf(nb).String()); err != nil {
		t.Fatalf("PUT: %v: %s", err, msg)
	}
	out := filepath.Join(dir, "back")
	if msg, err := coap("-m", "get", "-o", out, urls[1]+"/blocks?"+eris.RefOf(nb).String()); err != nil {
		t.Fatalf("GET of the uploaded block: %v: %s", err, msg)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, nb) {
		t.Fatalf("uploaded block served back as %d different bytes", len(got))
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("serve after SIGINT: %v: %s", waitErr, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15s of SIGINT")
	}
	// The upload was committed to the SQLite store.
	store, err = cache.OpenSQLite(storePath, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if got, err := store.GetBlock(context.Background(), eris.RefOf(nb)); err != nil || !bytes.Equal(got, nb) {
		t.Fatalf("uploaded block not in the store after shutdown: %v", err)
	}
}
