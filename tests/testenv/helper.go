package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"erismount/cache"
	"erismount/eris"
	"erismount/fetcher"
)

// serveEnv holds, in a re-executed test binary, what ServeProcess asked it
// to serve (see Main).
const serveEnv = "ERISMOUNT_TESTENV_SERVE"

type serveRequest struct {
	Store  string        // SQLite store path
	Listen string        // listen URL
	Delay  time.Duration // per block
}

// ServerProcess is a block server in a process of its own, so that a test
// can kill it as a peer dies: without closing anything.
type ServerProcess struct {
	URL string
	cmd *exec.Cmd
}

// ServeProcess serves the SQLite store at storePath over scheme from a new
// process (this test binary run again: the package's TestMain must call
// Main), delaying each block by delay so that reads are still in flight
// when the test kills it. The process is killed when the test ends.
func ServeProcess(t testing.TB, storePath, scheme string, delay time.Duration) *ServerProcess {
	t.Helper()
	listen := scheme + "://127.0.0.1:0"
	if scheme == "coap+unix" {
		listen = scheme + "://" + filepath.Join(t.TempDir(), "eris.sock")
	}
	req, _ := json.Marshal(serveRequest{Store: storePath, Listen: listen, Delay: delay})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+string(req))
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	cmd.Stderr = w
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The server lives as long as its stdin is open: it ends with the
	// test process even if the test cannot kill it.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start block server process: %v", err)
	}
	p := &ServerProcess{cmd: cmd}
	t.Cleanup(p.Kill)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("testenv: block server process did not start: %v", err)
	}
	p.URL = strings.TrimSpace(line)
	return p
}

// Kill kills the server process (SIGKILL) and reaps it.
func (p *ServerProcess) Kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// serveChild is the block server process of ServeProcess: it serves until
// its stdin closes.
func serveChild(spec string) int {
	var req serveRequest
	if err := json.Unmarshal([]byte(spec), &req); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: serve:", err)
		return 2
	}
	store, err := cache.OpenSQLite(req.Store, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv: serve:", err)
		return 1
	}
	defer store.Close()
	srv := fetcher.NewServer(slow{store, req.Delay}, fetcher.ServerOptions{})
	defer srv.Close()
	url, err := srv.Listen(context.Background(), req.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv: serve:", err)
		return 1
	}
	fmt.Println(url)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// slow delays every block get.
type slow struct {
	eris.BlockStore
	delay time.Duration
}

func (s slow) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.BlockStore.GetBlock(ctx, ref)
}
