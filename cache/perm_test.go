package cache_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"erismount/cache"
)

// nobody is the unprivileged user the permission cases run as when the
// tests run as root (root ignores file permissions).
const nobody = 65534

// TestSQLiteOpenPermission opens stores the user may not write. As root,
// each case runs in a child process (this test binary) as uid 65534.
func TestSQLiteOpenPermission(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the store path
		says  string
	}{
		{"file not readable", storeWithMode(0o600), "cannot open the file for reading and writing: permission denied"},
		{"file read-only", storeWithMode(0o644), "cannot open the file for reading and writing: permission denied"},
		{"directory not writable", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "blocks.sqlite")
		}, "cannot create the file: permission denied"},
		{"directory not writable, file is", storeWithMode(0o666), "is not writable (permission denied); SQLite needs to create the -wal and -shm files"},
		{"parent not searchable", func(t *testing.T, dir string) string {
			locked := filepath.Join(dir, "locked")
			os.Mkdir(locked, 0o700)
			return filepath.Join(locked, "sub", "blocks.sqlite")
		}, "permission denied"},
	}
	asRoot := os.Geteuid() == 0
	var bin string
	if asRoot {
		bin = executableForNobody(t)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			openUp(t, dir)
			path := tc.setup(t, dir)
			var msg string
			if asRoot {
				msg = openAsNobody(t, bin, path)
			} else {
				s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
				if err == nil {
					s.Close()
					t.Fatal("OpenSQLite succeeded")
				}
				msg = err.Error()
			}
			t.Log(msg)
			if !strings.Contains(msg, path) || !strings.Contains(msg, tc.says) {
				t.Errorf("error %q should name %s and say %q", msg, path, tc.says)
			}
		})
	}
}

// storeWithMode makes a valid, empty store in dir, owned by the test's
// user, with the given file mode.
func storeWithMode(mode os.FileMode) func(t *testing.T, dir string) string {
	return func(t *testing.T, dir string) string {
		t.Helper()
		path := filepath.Join(dir, "blocks.sqlite")
		s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
}

// openUp lets others reach dir (t.TempDir makes it and its parent 0700),
// without letting them write in it.
func openUp(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// executableForNobody copies the test binary where uid 65534 can run it.
func executableForNobody(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Skipf("running as root, and the test binary cannot be found to rerun it unprivileged: %v", err)
	}
	dir := t.TempDir()
	openUp(t, dir)
	bin := filepath.Join(dir, "cache.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// openAsNobody runs OpenSQLite(path) in a child process as uid 65534 and
// returns what it printed: the error, or "ok".
func openAsNobody(t *testing.T, bin, path string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin)
	cmd.Env = append(os.Environ(), childEnv+"=open", childPath+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Skipf("cannot run the test binary as uid %d (%v) %s", nobody, err, stderr)
	}
	msg := strings.TrimSpace(string(out))
	if msg == "ok" {
		t.Fatalf("uid %d opened %s", nobody, path)
	}
	return msg
}
