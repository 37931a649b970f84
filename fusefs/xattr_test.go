package fusefs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

func getxattr(t *testing.T, path, attr string) (string, error) {
	t.Helper()
	buf := make([]byte, 512)
	n, err := unix.Lgetxattr(path, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func listxattr(t *testing.T, path string) []string {
	t.Helper()
	buf := make([]byte, 512)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names
}

// blocks counts the blocks of the contents rcs: what user.eris.local counts
// (per capability, so a block two contents share counts twice).
func blocks(t *testing.T, g eris.BlockGetter, rcs ...eris.ReadCapability) int {
	t.Helper()
	n := 0
	for _, rc := range rcs {
		refs := 0
		if err := eris.Walk(context.Background(), rc, g, func(eris.Ref, int) error { refs++; return nil }); err != nil {
			t.Fatal(err)
		}
		n += refs
	}
	return n
}

// TestXattrs: user.eris.urn names what to fetch, user.eris.local says how
// much of it is here, and both follow the blocks as they arrive.
func TestXattrs(t *testing.T) {
	testenv.RequireFUSE(t)
	spec := testenv.Sample()
	src := spec.WriteDir(t)
	remote := eristest.NewStore()
	rc := testenv.Publish(t, src, remote)
	local := testenv.NewLocal()
	tree := testenv.OpenTree(t, rc, testenv.Keeping{Remote: remote, Local: local})
	srv := testenv.Mount(t, tree, fusefs.Options{Local: local})
	dir := srv.Dir()

	big, _ := tree.Lookup(bigFile)
	var contents []eris.ReadCapability
	seen := map[eris.ReadCapability]bool{}
	for e := range tree.All() {
		if e.Kind().IsFile() && !seen[e.Capability()] {
			seen[e.Capability()] = true
			contents = append(contents, e.Capability())
		}
	}
	all := blocks(t, remote, append(contents, rc)...)
	bigBlocks := blocks(t, remote, big.Capability())

	for _, tc := range []struct {
		path, attr, want string
		err              error
	}{
		{"", fusefs.XattrURN, rc.URN(), nil},
		{bigFile, fusefs.XattrURN, big.Capability().URN(), nil},
		{"share/doc", fusefs.XattrURN, "", syscall.ENODATA},
		{"docs", fusefs.XattrURN, "", syscall.ENODATA}, // a symlink
		{"share/doc", "user.other", "", syscall.ENODATA},
	} {
		got, err := getxattr(t, filepath.Join(dir, tc.path), tc.attr)
		if got != tc.want || !errors.Is(err, tc.err) && !(tc.err == nil && err == nil) {
			t.Errorf("%s %s = %q, %v; want %q, %v", tc.path, tc.attr, got, err, tc.want, tc.err)
		}
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"", []string{fusefs.XattrURN, fusefs.XattrLocal}},
		{bigFile, []string{fusefs.XattrURN, fusefs.XattrLocal}},
		{"share/doc", []string{fusefs.XattrLocal}},
		{"docs", nil},
	} {
		if got := listxattr(t, filepath.Join(dir, tc.path)); !slices.Equal(got, tc.want) {
			t.Errorf("listxattr %q = %q, want %q", tc.path, got, tc.want)
		}
	}
	// Too small a buffer is ERANGE, as getxattr(2) says.
	if _, err := unix.Lgetxattr(dir, fusefs.XattrURN, make([]byte, 10)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr into 10 bytes: %v, want ERANGE", err)
	}

	// The lookup fetched the end of the big file (its size): some of its
	// blocks are here, not all.
	got, err := getxattr(t, filepath.Join(dir, bigFile), fusefs.XattrLocal)
	if err != nil || strings.HasPrefix(got, "1.") || strings.HasPrefix(got, "0.0000 0/") || !strings.HasSuffix(got, fmt.Sprintf("/%d", bigBlocks)) {
		t.Errorf("%s before reading: %q, %v; want part of %d blocks", bigFile, got, err, bigBlocks)
	}
	if got, err := getxattr(t, dir, fusefs.XattrLocal); err != nil || strings.HasPrefix(got, "1.") || !strings.HasSuffix(got, fmt.Sprintf("/%d", all)) {
		t.Errorf("root before reading: %q, %v; want part of %d blocks", got, err, all)
	}
	// Reading everything brings every block here.
	testenv.CompareDirs(t, src, dir)
	want := fmt.Sprintf("1.0000 %d/%d", bigBlocks, bigBlocks)
	if got, err := getxattr(t, filepath.Join(dir, bigFile), fusefs.XattrLocal); got != want || err != nil {
		t.Errorf("%s after reading: %q, %v; want %q", bigFile, got, err, want)
	}
	want = fmt.Sprintf("1.0000 %d/%d", all, all)
	if got, err := getxattr(t, dir, fusefs.XattrLocal); got != want || err != nil {
		t.Errorf("root after reading: %q, %v; want %q", got, err, want)
	}
	// getfattr, the tool a user asks, says the same.
	if _, err := exec.LookPath("getfattr"); err == nil {
		out, err := exec.Command("getfattr", "--only-values", "-n", fusefs.XattrLocal, dir).Output()
		if err != nil || string(out) != want {
			t.Errorf("getfattr: %q, %v; want %q", out, err, want)
		}
	} else {
		t.Log("getfattr not installed (Debian package attr): checked with getxattr(2) only")
	}
}

// TestXattrsWithoutLocal: with no local store configured, there is no
// user.eris.local to ask.
func TestXattrsWithoutLocal(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Sample())
	dir := testenv.Mount(t, p.tree, fusefs.Options{}).Dir()
	if _, err := getxattr(t, filepath.Join(dir, bigFile), fusefs.XattrLocal); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("user.eris.local without a local store: %v, want ENODATA", err)
	}
	if got := listxattr(t, dir); !slices.Equal(got, []string{fusefs.XattrURN}) {
		t.Errorf("listxattr of the root: %q", got)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}
