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
	"sync"
	"sync/atomic"
	"testing"

	"erismount/cache"
	"erismount/eris"
	"erismount/fetcher"
)

// serveEnv holds, in a re-executed test binary, what ServeProcess asked it
// to serve (see Main).
const serveEnv = "ERISMOUNT_TESTENV_SERVE"

type serveRequest struct {
	Store  string // SQLite store path
	Listen string // listen URL
	// StallAfter, when positive, is how many blocks are served before
	// every further get waits until its request ends.
	StallAfter int
}

// ServerProcess is a block server in a process of its own, so that a test
// can kill it as a peer dies: without closing anything.
type ServerProcess struct {
	URL     string
	cmd     *exec.Cmd
	stalled chan struct{}
}

// ServeProcess serves the SQLite store at storePath over scheme from a new
// process (this test binary run again: the package's TestMain must call
// Main). With stallAfter > 0 it serves that many blocks and then answers
// no more, so that a read is in flight, by construction, when the test
// kills it; Stalled says when that point is reached.
func ServeProcess(t testing.TB, storePath, scheme string, stallAfter int) *ServerProcess {
	t.Helper()
	listen := scheme + "://127.0.0.1:0"
	if scheme == "coap+unix" {
		listen = scheme + "://" + filepath.Join(t.TempDir(), "eris.sock")
	}
	req, _ := json.Marshal(serveRequest{Store: storePath, Listen: listen, StallAfter: stallAfter})
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
	p := &ServerProcess{cmd: cmd, stalled: make(chan struct{})}
	t.Cleanup(p.Kill)
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("testenv: block server process did not start: %v", err)
	}
	p.URL = strings.TrimSpace(line)
	go func() {
		for {
			line, err := r.ReadString('\n')
			if strings.TrimSpace(line) == stalledLine {
				close(p.stalled)
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// stalledLine is what the server process prints once it stops answering.
const stalledLine = "stalled"

// Stalled is closed once the server process has served its stallAfter
// blocks and a further get is waiting.
func (p *ServerProcess) Stalled() <-chan struct{} { return p.stalled }

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
	srv := fetcher.NewServer(&stalling{BlockStore: store, after: int64(req.StallAfter)}, fetcher.ServerOptions{})
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

// stalling serves after blocks, then holds every further get until its
// request ends, printing stalledLine once.
type stalling struct {
	eris.BlockStore
	after  int64
	served atomic.Int64
	once   sync.Once
}

func (s *stalling) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if s.after <= 0 || s.served.Add(1) <= s.after {
		return s.BlockStore.GetBlock(ctx, ref)
	}
	s.once.Do(func() { fmt.Println(stalledLine) })
	<-ctx.Done()
	return nil, ctx.Err()
}
