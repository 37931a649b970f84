package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"erismount/fusefs"
)

// built is the erismount binary, built once per test process.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Erismount returns the path of the erismount command built from this
// checkout; it is built once per test process (Main removes it).
func Erismount(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			built.err = fmt.Errorf("no go command to build erismount with: %w", err)
			return
		}
		built.dir, built.err = os.MkdirTemp("", "erismount-test-bin-")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "erismount")
		out, err := exec.Command(goBin, "build", "-o", built.path, "erismount/cmd/erismount").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build erismount/cmd/erismount: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatalf("testenv: %v", built.err)
	}
	return built.path
}

// Main runs the tests and removes what the fixtures built; in a process
// started by ServeProcess it serves blocks instead. Call it from the
// TestMain of a package that uses Erismount or ServeProcess.
func Main(m *testing.M) int {
	if spec := os.Getenv(serveEnv); spec != "" {
		return serveChild(spec)
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	return code
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and a reader:
// a process's output, a logger's, and the test that inspects them.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process is a running erismount command.
type Process struct {
	Cmd    *exec.Cmd
	stdout SyncBuffer
	stderr SyncBuffer
	done   chan struct{}
	err    error
}

// Env is the environment erismount runs in under test: the caller's,
// with a private XDG_CACHE_HOME (so the user's real block store is never
// touched) and no ERISMOUNT_PEERS.
func Env(t testing.TB) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_CACHE_HOME=") && !strings.HasPrefix(kv, "ERISMOUNT_PEERS=") {
			env = append(env, kv)
		}
	}
	return append(env, "XDG_CACHE_HOME="+t.TempDir())
}

// Start starts erismount with args. The process is killed when the test
// ends if it is still running.
func Start(t testing.TB, args ...string) *Process {
	t.Helper()
	return StartEnv(t, nil, args...)
}

// Stdout and Stderr are what the process wrote so far.
func (p *Process) Stdout() string { return p.stdout.String() }
func (p *Process) Stderr() string { return p.stderr.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 if it did not exit in time or was killed by a signal).
func (p *Process) Wait(timeout time.Duration) int {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// Interrupt sends SIGINT (a user's Ctrl-C) to an erismount serving a
// mount at dir and fails the test unless it exits with 0 and leaves dir
// unmounted.
func (p *Process) Interrupt(t testing.TB, dir string) {
	t.Helper()
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("testenv: SIGINT to erismount: %v", err)
	}
	if code := p.Wait(time.Minute); code != 0 {
		t.Errorf("testenv: erismount exited with %d after SIGINT, want 0:\n%s", code, p.Stderr())
	}
	if !Unmounted(dir, time.Second) {
		t.Errorf("testenv: %s still mounted after erismount exited", dir)
	}
}

// Run runs erismount with args to completion and returns its output and
// exit code.
func Run(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return RunEnv(t, nil, args...)
}

// WaitMounted waits until a live mount is at dir (one that answers
// statfs: a dead one left by a killed process does not), failing the test
// with p's output if p exits first or timeout passes. When the test ends,
// a mount still at dir is detached, whatever p did.
func WaitMounted(t testing.TB, p *Process, dir string, timeout time.Duration) {
	t.Helper()
	t.Cleanup(func() {
		if fusefs.IsMountPoint(dir) {
			fusefs.Detach(dir)
		}
	})
	end := time.Now().Add(timeout)
	for !live(dir) {
		select {
		case <-p.done:
			t.Fatalf("testenv: erismount exited before mounting %s: %v\n%s", dir, p.err, p.Stderr())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("testenv: %s not mounted after %v:\n%s", dir, timeout, p.Stderr())
		}
	}
}

// live reports whether a mount at dir answers.
func live(dir string) bool {
	var st syscall.Statfs_t
	return fusefs.IsMountPoint(dir) && syscall.Statfs(dir, &st) == nil
}

// Unmounted reports whether nothing is mounted at dir any more, waiting
// up to timeout.
func Unmounted(dir string, timeout time.Duration) bool {
	end := time.Now().Add(timeout)
	for fusefs.IsMountPoint(dir) {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
