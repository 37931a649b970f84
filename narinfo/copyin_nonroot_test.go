package narinfo_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

const nonRootEnv = "NARINFO_TEST_NONROOT_DIR"

// TestCopyInCleanupNonRoot: a copy-in that fails after its directories
// were made read-only (0555) still removes everything when the user is not
// root, who alone could delete entries of a read-only directory anyway. As
// root the test reruns itself as nobody.
func TestCopyInCleanupNonRoot(t *testing.T) {
	if dir := os.Getenv(nonRootEnv); dir != "" {
		cleanupAfterReadOnly(t, dir)
		return
	}
	if os.Geteuid() != 0 {
		cleanupAfterReadOnly(t, t.TempDir())
		return
	}
	dir, err := os.MkdirTemp("", "copyin-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, "narinfo.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o777)
	os.Chmod(work, 0o777)
	cmd := exec.Command(bin, "-test.run=^TestCopyInCleanupNonRoot$", "-test.v")
	cmd.Env = append(os.Environ(), nonRootEnv+"="+work)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("as nobody:\n%s", out)
}

func cleanupAfterReadOnly(t *testing.T, dir string) {
	src := nartest.Build(t, filepath.Join(dir, "src"), nartest.Tree())
	want := narSum(t, nar.DirFS(src))
	store := filepath.Join(dir, "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(store, itemBase)
	opts := narinfo.CopyInOptions{Progress: func(int64) { os.Mkdir(planted, 0o755) }}
	err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, itemBase, want, opts)
	if !errors.Is(err, narinfo.ErrExists) {
		t.Fatalf("uid %d: got %v, want ErrExists after the rename was refused", os.Geteuid(), err)
	}
	if got := storeEntries(t, store); len(got) != 1 || got[0] != itemBase {
		t.Fatalf("uid %d: store holds %v, want only the planted item", os.Geteuid(), got)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
