package testenv

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartEnv is Start with more environment variables (NAME=value), such as
// the AWS keys of an S3 server; they override the caller's.
func StartEnv(t testing.TB, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(Erismount(t), args...), done: make(chan struct{})}
	p.Cmd.Env = append(Env(t), env...)
	p.Cmd.Stdout = &p.stdout
	p.Cmd.Stderr = &p.stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("testenv: start erismount: %v", err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.Cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// RunEnv is Run with more environment variables.
func RunEnv(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := StartEnv(t, env, args...)
	code = p.Wait(2 * time.Minute)
	return p.Stdout(), p.Stderr(), code
}

// FirstLine waits up to timeout for p to print a whole line on stdout
// (a server's address) and returns it, failing the test if p exits first.
func FirstLine(t testing.TB, p *Process, timeout time.Duration) string {
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		if line, _, ok := strings.Cut(p.Stdout(), "\n"); ok {
			return line
		}
		select {
		case <-p.Done():
			t.Fatalf("testenv: erismount exited before printing a line: %v\n%s", p.err, p.Stderr())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("testenv: erismount printed no line in %v:\n%s", timeout, p.Stderr())
		}
	}
}

// StartSubstituteServer starts `erismount substitute-server` with an
// empty block cache, listening on a loopback port, and returns its URL.
func StartSubstituteServer(t testing.TB, args ...string) (string, *Process) {
	t.Helper()
	args = append([]string{"substitute-server", "--store", filepath.Join(t.TempDir(), "cache.sqlite"), "--listen", "127.0.0.1:0"}, args...)
	p := Start(t, args...)
	line := FirstLine(t, p, 30*time.Second)
	if !strings.HasPrefix(line, "http://") {
		t.Fatalf("testenv: substitute-server printed %q, not its URL:\n%s", line, p.Stderr())
	}
	return line, p
}
