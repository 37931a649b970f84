package fusefs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

// published is a sample tree written to disk, encoded into a store and
// opened through a getter the test can count and break.
type published struct {
	src    string
	store  *eristest.Store
	count  *testenv.Counting
	faulty *testenv.Faulty
	rc     eris.ReadCapability
	tree   *erisfs.Tree
}

func publish(t *testing.T, spec testenv.Spec) *published {
	t.Helper()
	p := &published{src: spec.WriteDir(t), store: eristest.NewStore()}
	p.rc = testenv.Publish(t, p.src, p.store)
	p.count = testenv.NewCounting(p.store)
	p.faulty = testenv.NewFaulty(p.count)
	t.Cleanup(p.faulty.Release)
	p.tree = testenv.OpenTree(t, p.rc, p.faulty)
	return p
}

// TestMountSample mounts a tree with one of everything and compares it with
// its source: every file, mode and symlink, byte for byte, and the
// io/fs contract over the mount with testing/fstest.
func TestMountSample(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Sample())
	srv := testenv.Mount(t, p.tree, fusefs.Options{})
	testenv.CompareDirs(t, p.src, srv.Dir())

	// Inode numbers are the tree's entry numbers.
	for e := range p.tree.All() {
		fi, err := os.Lstat(filepath.Join(srv.Dir(), e.Path()))
		if err != nil {
			t.Fatal(err)
		}
		if ino := fi.Sys().(*syscall.Stat_t).Ino; ino != e.Ino() {
			t.Errorf("%q: inode %d, want entry number %d", e.Path(), ino, e.Ino())
		}
	}
	// statfs answers on any node, not only the root.
	for _, path := range []string{"", "share/doc", "bin/hello"} {
		var st syscall.Statfs_t
		if err := syscall.Statfs(filepath.Join(srv.Dir(), path), &st); err != nil {
			t.Fatalf("statfs %q: %v", path, err)
		}
		if st.Files != uint64(p.tree.Len()) || st.Namelen != 255 {
			t.Errorf("statfs %q: files %d namelen %d, want %d and 255", path, st.Files, st.Namelen, p.tree.Len())
		}
	}
}

// TestMountFSTest runs testing/fstest over the mount (without the
// symlinks that point outside the tree, which io/fs cannot open, and
// without the files of a megabyte and more, which fstest reads a byte at
// a time: TestMountSample reads those).
func TestMountFSTest(t *testing.T) {
	testenv.RequireFUSE(t)
	spec := testenv.Sample().Without("abs", "dangling")
	for path, n := range spec {
		if len(n.Content) >= 1<<20 {
			delete(spec, path)
		}
	}
	p := publish(t, spec)
	srv := testenv.Mount(t, p.tree, fusefs.Options{})
	if err := fstest.TestFS(os.DirFS(srv.Dir()), spec.Paths()...); err != nil {
		t.Fatal(err)
	}
}

// TestMountExec runs programs from the mount: a shell script and a copy
// of the host's echo binary, through sh (exec'ing a file of our own mount
// directly from this process can deadlock in fork, see go-fuse's docs).
func TestMountExec(t *testing.T) {
	testenv.RequireFUSE(t)
	spec := testenv.Sample()
	spec["bin/echo"] = testenv.HostBinary(t, "echo")
	p := publish(t, spec)
	srv := testenv.Mount(t, p.tree, fusefs.Options{})
	for _, tc := range []struct {
		name, cmd, want string
	}{
		{"script", "bin/hello world", "hello from eris world\n"},
		{"symlink to script", "bin/hello-link again", "hello from eris again\n"},
		{"elf binary", "bin/echo from an ELF", "from an ELF\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command("sh", "-c", filepath.Join(srv.Dir(), tc.cmd)).CombinedOutput()
			if err != nil || string(out) != tc.want {
				t.Errorf("%s: %q, %v; want %q", tc.cmd, out, err, tc.want)
			}
		})
	}
	// A file without the execute bit cannot be run.
	err := exec.Command("sh", "-c", filepath.Join(srv.Dir(), "share/doc/README")).Run()
	if err == nil {
		t.Errorf("running a 0444 file succeeded")
	}
}

// TestReadOnly: every attempt to change the tree fails with EROFS.
func TestReadOnly(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Sample())
	dir := testenv.Mount(t, p.tree, fusefs.Options{}).Dir()
	file := filepath.Join(dir, "share/doc/README")
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"open for writing", func() error {
			f, err := os.OpenFile(file, os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"create", func() error { return os.WriteFile(filepath.Join(dir, "new"), nil, 0o644) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(dir, "newdir"), 0o755) }},
		{"remove", func() error { return os.Remove(file) }},
		{"chmod", func() error { return os.Chmod(file, 0o777) }},
		{"rename", func() error { return os.Rename(file, file+".old") }},
		{"setxattr", func() error { return syscall.Setxattr(file, "user.x", []byte("y"), 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, syscall.EROFS) {
				t.Errorf("%s: %v, want EROFS", tc.name, err)
			}
		})
	}
}

// TestSingleFileTree: a tree whose root is one file appears as that file
// under Options.FileName in the mount directory.
func TestSingleFileTree(t *testing.T) {
	testenv.RequireFUSE(t)
	for _, tc := range []struct {
		name string
		node testenv.Node
	}{
		{"regular", testenv.Bytes(testenv.Random(3, 70000))},
		{"executable", testenv.Exec("#!/bin/sh\necho single\n")},
		{"symlink", testenv.Link("../elsewhere")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := testenv.Spec{"item": tc.node}.WriteDir(t)
			store := eristest.NewStore()
			rc := testenv.Publish(t, filepath.Join(src, "item"), store)
			tree := testenv.OpenTree(t, rc, store)
			srv := testenv.Mount(t, tree, fusefs.Options{FileName: "item"})
			testenv.CompareDirs(t, src, srv.Dir())
			got, err := os.ReadDir(srv.Dir())
			if err != nil || len(got) != 1 || got[0].Name() != "item" {
				t.Errorf("mount lists %v, %v; want just item", got, err)
			}
		})
	}
}

// TestMountErrors: a missing, non-directory, busy or non-empty mount point
// is refused with an error saying so.
func TestMountErrors(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Spec{"a": testenv.File("a")})
	busy := testenv.Mount(t, p.tree, fusefs.Options{}).Dir()
	parent := t.TempDir()
	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		is        error
		says      string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope"), fs.ErrNotExist, "does not exist"},
		{"not a directory", file, nil, "not a directory"},
		{"busy", busy, fusefs.ErrBusy, "mounted there already"},
		{"not empty", parent, fusefs.ErrNotEmpty, `not empty (it holds "file")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := fusefs.Mount(context.Background(), tc.dir, p.tree, fusefs.Options{})
			if err == nil {
				srv.Close()
				t.Fatalf("mounted at %s", tc.dir)
			}
			if tc.is != nil && !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), tc.dir) {
				t.Errorf("error %q: want one matching %v that says %q and names %s", err, tc.is, tc.says, tc.dir)
			}
		})
	}
}

// TestMountNonEmpty: with NonEmpty a tree mounts over a directory that
// holds files, hiding them until it is unmounted.
func TestMountNonEmpty(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Spec{"a": testenv.File("mounted")})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hidden"), []byte("under"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := testenv.MountAt(t, dir, p.tree, fusefs.Options{NonEmpty: true})
	if got, err := os.ReadFile(filepath.Join(dir, "a")); err != nil || string(got) != "mounted" {
		t.Errorf("a: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hidden")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file under the mount: %v, want it hidden", err)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "hidden")); err != nil || string(got) != "under" {
		t.Errorf("after unmount, the file under it: %q, %v", got, err)
	}
}

// TestUnmountBusy: with a file open, Unmount fails with ErrBusy and the
// tree stays usable; Close detaches it anyway, and the server goes on until
// that file is closed.
func TestUnmountBusy(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Sample())
	dir := t.TempDir()
	srv, err := fusefs.Mount(context.Background(), dir, p.tree, fusefs.Options{Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if fusefs.IsMountPoint(dir) {
			t.Error("still mounted at the end")
			fusefs.Detach(dir)
		}
	})
	f, err := os.Open(filepath.Join(dir, "share/doc/README"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := srv.Unmount(); !errors.Is(err, fusefs.ErrBusy) {
		t.Fatalf("Unmount with an open file: %v, want ErrBusy", err)
	}
	if _, err := os.ReadFile(filepath.Join(dir, "bin/hello")); err != nil {
		t.Fatalf("after a failed unmount: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if fusefs.IsMountPoint(dir) {
		t.Fatalf("%s still a mount point after Close", dir)
	}
	// The open file still reads: a detached mount serves its open files,
	// and goes on serving until the last of them is closed.
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, 0); err != nil || !bytes.Equal(b, []byte("A sample")) {
		t.Errorf("open file after detach: %q, %v", b, err)
	}
	select {
	case <-srv.Done():
		t.Fatal("the detached mount ended while a file below it was open")
	default:
	}
	f.Close()
	select {
	case <-srv.Done():
	case <-time.After(time.Minute): // a hang check: the kernel ends the connection at the close
		t.Fatal("the detached mount still served a minute after its last open file was closed")
	}
}

// TestAllowOther: another user reads the tree only when the mount allows
// it (FUSE's allow_other).
func TestAllowOther(t *testing.T) {
	testenv.RequireFUSE(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Getuid() != 0 {
		t.Skipf("needs root and setpriv (util-linux) to read as another user: uid %d, %v", os.Getuid(), err)
	}
	p := publish(t, testenv.Sample())
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow_other=%v", allow), func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "mnt")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			// Let the other user reach the mount point.
			for d := parent; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
				os.Chmod(d, 0o755)
			}
			testenv.MountAt(t, dir, p.tree, fusefs.Options{AllowOther: allow})
			out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(dir, "share/doc/README")).CombinedOutput()
			readable := err == nil && string(out) == string(testenv.Sample()["share/doc/README"].Content)
			if readable != allow {
				t.Errorf("as uid 65534: %q, %v; want readable=%v", out, err, allow)
			}
		})
	}
}
