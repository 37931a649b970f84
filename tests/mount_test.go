package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"erismount/eris"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

// mountTimeout bounds how long a test waits for erismount to mount or
// exit: a hang check, not a performance figure.
const mountTimeout = time.Minute

// offlineSample publishes the sample tree into a new SQLite store, for a
// mount without peers; it returns the source directory, the store's path
// and the tree's capability.
func offlineSample(t *testing.T) (src, store string, rc eris.ReadCapability) {
	t.Helper()
	testenv.RequireFUSE(t)
	src = testenv.Sample().WriteDir(t)
	store = filepath.Join(t.TempDir(), "blocks.sqlite")
	return src, store, testenv.PublishSQLite(t, src, store)
}

// TestCLIMountOffline: `erismount URN DIR` mounts a tree whose blocks are
// all in the SQLite store, with no peer: everything reads, the status
// attributes say it is all here, and SIGINT unmounts it cleanly.
func TestCLIMountOffline(t *testing.T) {
	src, store, rc := offlineSample(t)
	dir := t.TempDir()

	p := testenv.Start(t, rc.URN(), dir, "--store", store)
	testenv.WaitMounted(t, p, dir, mountTimeout)
	testenv.CompareDirs(t, src, dir)
	out, err := exec.Command("sh", "-c", filepath.Join(dir, "bin/hello")+" offline").CombinedOutput()
	if err != nil || string(out) != "hello from eris offline\n" {
		t.Errorf("bin/hello: %q, %v", out, err)
	}
	buf := make([]byte, 256)
	if n, err := unix.Getxattr(dir, fusefs.XattrURN, buf); err != nil || string(buf[:n]) != rc.URN() {
		t.Errorf("user.eris.urn of the root: %q, %v", buf[:n], err)
	}
	if n, err := unix.Getxattr(dir, fusefs.XattrLocal, buf); err != nil || !strings.HasPrefix(string(buf[:n]), "1.0000 ") {
		t.Errorf("user.eris.local of the root with every block stored: %q, %v", buf[:n], err)
	}

	p.Interrupt(t, dir)
}

// TestCLIMountSubcommand: `erismount mount URN DIR` with flags, --json,
// and an unmount from outside (fusermount3 -u) ending the command.
func TestCLIMountSubcommand(t *testing.T) {
	testenv.RequireFUSE(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 not installed (Debian package fuse3): cannot unmount from outside")
	}
	src, store, rc := offlineSample(t)
	dir := t.TempDir()

	p := testenv.Start(t, "mount", rc.URN(), dir, "--store", store, "--deadline", "2s", "--json")
	testenv.WaitMounted(t, p, dir, mountTimeout)
	testenv.CompareDirs(t, src, dir)
	var info struct {
		URN     string `json:"urn"`
		Dir     string `json:"dir"`
		Entries int    `json:"entries"`
	}
	// The JSON line is written once mounted; the bound is only for a hang.
	for end := time.Now().Add(mountTimeout); !strings.HasSuffix(p.Stdout(), "\n") && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := json.Unmarshal([]byte(p.Stdout()), &info); err != nil || info.URN != rc.URN() || info.Dir != dir || info.Entries == 0 {
		t.Errorf("--json printed %q (%v)", p.Stdout(), err)
	}
	unmounted := time.Now()
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	// The bound is a hang check only; the time is logged for the record.
	if code := p.Wait(mountTimeout); code != 0 {
		t.Errorf("exit code %d after an outside unmount, want 0:\n%s", code, p.Stderr())
	}
	t.Logf("erismount exited %v after fusermount3 -u started", time.Since(unmounted).Round(time.Millisecond))
}

// TestCLIMountBackground: --foreground=false returns once the tree is
// mounted; the mount is served by a detached process until unmounted.
func TestCLIMountBackground(t *testing.T) {
	src, store, rc := offlineSample(t)
	dir := t.TempDir()
	t.Cleanup(func() {
		if fusefs.IsMountPoint(dir) {
			fusefs.Detach(dir)
		}
	})
	stdout, stderr, code := testenv.Run(t, rc.URN(), dir, "--store", store, "--foreground=false", "--json")
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, stderr)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(stdout), &info); err != nil || info.PID == 0 {
		t.Fatalf("--json printed %q (%v)", stdout, err)
	}
	if !fusefs.IsMountPoint(dir) {
		t.Fatalf("erismount returned but %s is not mounted", dir)
	}
	testenv.CompareDirs(t, src, dir)
	// The background process unmounts on SIGTERM.
	if err := syscall.Kill(info.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !testenv.Unmounted(dir, mountTimeout) {
		t.Errorf("%s still mounted after SIGTERM to pid %d", dir, info.PID)
	}
}

// exited reports whether process pid has ended: gone, or a zombie that
// its parent (here init, for a background mount) has not reaped yet.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state …: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// TestCLIMountBackgroundUnmountOutside: a background mount's process ends
// once its tree is unmounted from outside (fusermount3 -u). It counts as
// ended when it is a zombie: its parent is init, which reaps it when it
// will (in some containers seconds later).
func TestCLIMountBackgroundUnmountOutside(t *testing.T) {
	src, store, rc := offlineSample(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 not installed (Debian package fuse3): cannot unmount from outside")
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		if fusefs.IsMountPoint(dir) {
			fusefs.Detach(dir)
		}
	})
	stdout, stderr, code := testenv.Run(t, rc.URN(), dir, "--store", store, "--foreground=false", "--json")
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, stderr)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(stdout), &info); err != nil || info.PID == 0 {
		t.Fatalf("--json printed %q (%v)", stdout, err)
	}
	testenv.CompareDirs(t, src, dir)
	start := time.Now()
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	// The bound is a hang check only; the time is logged for the record.
	for end := time.Now().Add(mountTimeout); !exited(info.PID); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			syscall.Kill(info.PID, syscall.SIGKILL)
			t.Fatalf("pid %d still running %v after fusermount3 -u", info.PID, mountTimeout)
		}
	}
	t.Logf("the background erismount exited %v after fusermount3 -u started", time.Since(start).Round(time.Millisecond))
}

// TestCLIMountErrors: the mistakes a user makes get a message naming the
// problem and an exit code a script can use.
func TestCLIMountErrors(t *testing.T) {
	testenv.RequireFUSE(t)
	src := testenv.Spec{"a": testenv.File("a")}.WriteDir(t)
	store := filepath.Join(t.TempDir(), "blocks.sqlite")
	rc := testenv.PublishSQLite(t, src, store)
	missing := filepath.Join(t.TempDir(), "nope")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	full := filepath.Dir(file) // holds file
	busy := t.TempDir()
	p := testenv.Start(t, rc.URN(), busy, "--store", store)
	testenv.WaitMounted(t, p, busy, mountTimeout)
	t.Cleanup(func() {
		p.Signal(syscall.SIGINT)
		p.Wait(mountTimeout)
	})
	// A well-formed capability of a tree nobody has.
	unknown, err := eris.NewReadCapability(rc.BlockSize(), rc.Level(), eris.Ref{1}, eris.Key{2})
	if err != nil {
		t.Fatal(err)
	}
	// A port nobody listens on, and an empty cache that must ask it.
	empty := filepath.Join(t.TempDir(), "empty.sqlite")
	refused := []string{"--store", empty, "--peer", "coap+tcp://127.0.0.1:1", "--deadline", "2s"}
	refusedUDP := []string{"--store", empty, "--peer", "coap://127.0.0.1:1", "--deadline", "2s"}
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"missing directory", []string{rc.URN(), missing}, 2, "does not exist"},
		{"unreachable peer", append([]string{rc.URN(), t.TempDir()}, refused...), 3, "block unavailable"},
		{"unreachable peer names it", append([]string{rc.URN(), t.TempDir()}, refused...), 3, "coap+tcp://127.0.0.1:1/.well-known/eris: dial tcp 127.0.0.1:1: connect: connection refused"},
		// Over UDP the refusal is an ICMP port unreachable, which go-coap
		// reports apart from the requests it ends.
		{"unreachable UDP peer", append([]string{rc.URN(), t.TempDir()}, refusedUDP...), 3, "coap://127.0.0.1:1/.well-known/eris: connection refused"},
		{"not a directory", []string{rc.URN(), file}, 2, "not a directory"},
		{"busy directory", []string{rc.URN(), busy}, 1, "mounted there already"},
		{"non-empty directory", []string{rc.URN(), full}, 2, `is not empty (it holds "file"): the mount would hide what is there: mount point not empty (pass --nonempty`},
		{"malformed URN", []string{"urn:eris:nonsense", t.TempDir()}, 2, "urn"},
		{"one argument", []string{"mount", rc.URN()}, 2, "arg"},
		{"unknown tree, no peers", []string{unknown.URN(), t.TempDir(), "--deadline", "200ms"}, 3, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !slices.Contains(args, "--store") {
				args = append(args, "--store", store)
			}
			_, stderr, code := testenv.Run(t, args...)
			if code != tc.code || !strings.Contains(strings.ToLower(stderr), strings.ToLower(tc.says)) {
				t.Errorf("exit code %d, stderr %q; want %d and a message saying %q", code, stderr, tc.code, tc.says)
			}
		})
	}
}

// TestCLIMountNonEmpty: --nonempty mounts over a directory that holds
// files (without it the mount is refused: TestCLIMountErrors), and they are
// there again once it is unmounted.
func TestCLIMountNonEmpty(t *testing.T) {
	src, store, rc := offlineSample(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "under"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "mount", rc.URN(), dir, "--store", store, "--nonempty")
	testenv.WaitMounted(t, p, dir, mountTimeout)
	testenv.CompareDirs(t, src, dir)
	p.Interrupt(t, dir)
	if got, err := os.ReadFile(filepath.Join(dir, "under")); err != nil || string(got) != "x" {
		t.Errorf("the file under the mount after it: %q, %v", got, err)
	}
}

// TestCLIMountNoFUSE: without /dev/fuse — hidden here by an empty /dev in
// a private mount namespace, so erismount's mount(2) and the fusermount3
// fallback both miss it — mount fails at once saying what is missing and
// what to do.
func TestCLIMountNoFUSE(t *testing.T) {
	_, store, rc := offlineSample(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("no unshare(1) to hide /dev/fuse with: %v", err)
	}
	bin := testenv.Erismount(t)
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", `mount -t tmpfs none /dev && exec "$@"`,
		"sh", bin, "--store", store, "mount", rc.URN(), t.TempDir())
	cmd.Env = testenv.Env(t)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("erismount without /dev/fuse: %v, want it to fail; output:\n%s", err, out)
	}
	for _, want := range []string{"FUSE unavailable", "/dev/fuse", "no such file", "load the fuse module"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q does not say %q", out, want)
		}
	}
	if code := ee.ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
}

// TestCLIRemountAfterKill: a killed erismount leaves a dead mount behind
// (ENOTCONN for everyone); mounting again at the same place clears it.
func TestCLIRemountAfterKill(t *testing.T) {
	src, store, rc := offlineSample(t)
	dir := t.TempDir()
	p := testenv.Start(t, "-v", rc.URN(), dir, "--store", store)
	testenv.WaitMounted(t, p, dir, mountTimeout)
	// Killed between the mount and go-fuse's poll hack (it opens a file
	// on its own mount right after mounting), the process could never
	// exit: its own FLUSH of that file would wait for itself. "mounted"
	// is logged once the hack is done.
	waitLogged(t, p, "msg=mounted")
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Wait(mountTimeout)
	var st syscall.Statfs_t
	err := syscall.Statfs(dir, &st)
	t.Logf("killed erismount exited after %v; statfs of its mount point: %v", time.Since(start), err)
	if !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("statfs of a dead mount: %v, want ENOTCONN", err)
	}
	start = time.Now()
	p = testenv.Start(t, rc.URN(), dir, "--store", store)
	testenv.WaitMounted(t, p, dir, mountTimeout)
	t.Logf("mounted again after %v", time.Since(start))
	testenv.CompareDirs(t, src, dir)
	p.Interrupt(t, dir)
}

// waitLogged waits until p has written want to its stderr, failing the
// test if p exits first (or, as a hang check, after mountTimeout).
func waitLogged(t *testing.T, p *testenv.Process, want string) {
	t.Helper()
	end := time.Now().Add(mountTimeout)
	for !strings.Contains(p.Stderr(), want) {
		select {
		case <-p.Done():
			t.Fatalf("erismount exited (code %d) before saying %q:\n%s", p.Wait(mountTimeout), want, p.Stderr())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("erismount did not say %q within %v:\n%s", want, mountTimeout, p.Stderr())
		}
	}
}

// detachedLine is what erismount logs when SIGTERM finds files open.
const detachedLine = "detached it, serving them until they are closed"

// TestCLIUnmountOpenFile: SIGTERM with a file open below the mount
// detaches the tree lazily, and the process keeps serving the open file
// until it is closed (a program running from the mount goes on working),
// then exits 0.
func TestCLIUnmountOpenFile(t *testing.T) {
	src, store, rc := offlineSample(t)
	dir := t.TempDir()
	p := testenv.Start(t, "mount", rc.URN(), dir, "--store", store)
	testenv.WaitMounted(t, p, dir, mountTimeout)
	const name = "data/size-01048579"
	want, err := os.ReadFile(filepath.Join(src, name))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 8)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, p, detachedLine)
	if !testenv.Unmounted(dir, mountTimeout) {
		t.Fatalf("%s still mounted after SIGTERM", dir)
	}
	// All of the file, most of it never read before (not in the page
	// cache): the process serves it.
	got := make([]byte, len(want))
	if n, err := f.ReadAt(got, 0); n != len(want) || err != nil && n < len(want) || !slices.Equal(got, want) {
		t.Fatalf("read %d of %d bytes from the open file after SIGTERM: %v", n, len(want), err)
	}
	select {
	case <-p.Done():
		t.Fatalf("erismount exited (code %d) while a file below its mount was open:\n%s", p.Wait(mountTimeout), p.Stderr())
	default:
	}
	f.Close()
	if code := p.Wait(mountTimeout); code != 0 {
		t.Fatalf("exit code %d after the last file was closed (or still running), want 0:\n%s", code, p.Stderr())
	}
}

// TestCLIUnmountOpenFileForced: a second SIGTERM stops a process that is
// serving a detached tree to open files; those files then fail.
func TestCLIUnmountOpenFileForced(t *testing.T) {
	_, store, rc := offlineSample(t)
	dir := t.TempDir()
	p := testenv.Start(t, "mount", rc.URN(), dir, "--store", store)
	testenv.WaitMounted(t, p, dir, mountTimeout)
	f, err := os.Open(filepath.Join(dir, "data/size-01048579"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, p, detachedLine)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(mountTimeout); code != 0 {
		t.Fatalf("exit code %d after a second signal (-1: still running), want 0:\n%s", code, p.Stderr())
	}
	if _, err := f.ReadAt(make([]byte, 4096), 512<<10); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read from a file of a mount whose process stopped: %v, want ENOTCONN", err)
	}
}
