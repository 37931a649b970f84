package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"erismount/narinfo/nar"
)

// NixStoreDir is the store the Nix tests use: the real one, as Debian's
// nix-bin 2.8 substitutes only into the store it was built for.
const NixStoreDir = "/nix/store"

// RequireNix skips the test unless nix-store is installed and this process
// may write the Nix store (root, single-user Nix as Debian installs it).
func RequireNix(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nix-store"); err != nil {
		t.Skip("nix-store (Debian package nix-bin) is not installed: no real Nix client to substitute with")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot write /nix/store (Nix tests use the real store)")
	}
	if err := os.MkdirAll(NixStoreDir, 0o1775); err != nil {
		t.Skipf("cannot create %s: %v", NixStoreDir, err)
	}
}

// Nix runs a nix command with its caches (the narinfo disk cache above
// all) in a directory of the test's own, so that no answer from another
// test or an earlier run is remembered. It returns stdout and, on failure,
// the error with stderr.
func Nix(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	return NixContext(context.Background(), t, name, args...)
}

// NixContext is Nix with a context.
func NixContext(ctx context.Context, t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir(), "NIX_REMOTE=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), &nixError{args: append([]string{name}, args...), err: err, stderr: stderr.String()}
	}
	return string(out), nil
}

type nixError struct {
	args   []string
	err    error
	stderr string
}

func (e *nixError) Error() string {
	return strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.stderr
}

// NixValid reports whether path is a valid path of the Nix store.
func NixValid(t testing.TB, path string) bool {
	t.Helper()
	_, err := Nix(t, "nix-store", "--check-validity", path)
	return err == nil
}

// NixHashPart returns a fresh random store path hash: 32 nix-base32
// characters, so that concurrent and repeated runs never collide.
func NixHashPart(t testing.TB) string {
	t.Helper()
	b := make([]byte, 20)
	rand.Read(b)
	return nar.EncodeNix32(b)
}

// NixImport adds the tree at dir to the Nix store as an input-addressed
// item named name with the given references (full store paths, already
// valid), through nix-store --import, as a build's output would be: no
// content address, so that substituting it requires a signature. It
// returns the store path; the item is deleted when the test ends.
func NixImport(t testing.TB, dir, name string, refs []string) string {
	t.Helper()
	path := NixStoreDir + "/" + NixHashPart(t) + "-" + name
	var exp bytes.Buffer
	num := func(n uint64) { binary.Write(&exp, binary.LittleEndian, n) }
	str := func(s string) {
		num(uint64(len(s)))
		exp.WriteString(s)
		exp.Write(make([]byte, (8-len(s)%8)%8))
	}
	// nix-store --export's stream (spec §4.4, option 2): 1, the nar,
	// "NIXE", the path, the references, the deriver, no signature, 0.
	num(1)
	if err := nar.WriteFS(context.Background(), &exp, nar.DirFS(dir)); err != nil {
		t.Fatalf("testenv: nar of %s: %v", dir, err)
	}
	num(0x4558494e)
	str(path)
	num(uint64(len(refs)))
	for _, r := range refs {
		str(r)
	}
	str("")
	num(0)
	num(0)
	cmd := exec.Command("nix-store", "--import")
	cmd.Stdin = &exp
	cmd.Env = append(os.Environ(), "NIX_REMOTE=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: nix-store --import %s: %v\n%s", path, err, out)
	}
	t.Cleanup(func() { NixRemove(t, path) })
	return path
}

// NixRemove deletes path from the Nix store if it is valid there, and
// removes whatever is left at its place (a partly written, invalid item).
func NixRemove(t testing.TB, path string) {
	t.Helper()
	if NixValid(t, path) {
		if _, err := Nix(t, "nix-store", "--delete", path); err != nil {
			t.Errorf("testenv: %v", err)
		}
	}
	if _, err := os.Lstat(path); err == nil {
		// Store items are read-only: make directories writable first.
		filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(path); err != nil {
			t.Errorf("testenv: remove %s: %v", path, err)
		}
	}
	// The lock file Nix leaves beside a path whose substitution failed.
	os.Remove(path + ".lock")
}
