// Package nartest holds test fixtures for nars: the spec's vector trees
// (specs/guix-substitutes.md §2.3), a way to build any tree on disk, and the
// independent peers nix-store --dump and nix-hash.
package nartest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"erismount/narinfo/nar"
)

// Entry is one node of a test tree; Path "" is the root.
type Entry struct {
	Path   string
	Type   nar.Type
	Data   string // contents of a file
	Target string // of a symlink
}

// Vector is a tree whose nar the spec gives, checked there with nix-bin.
type Vector struct {
	Name    string
	Entries []Entry
	Size    int64  // NarSize
	Nix32   string // NarHash without "sha256:"
	Hex     string // nar bytes when the spec lists them, hex encoded
}

// Vectors returns the trees of spec §2.3.
func Vectors() []Vector {
	return []Vector{
		{Name: "file1", Entries: []Entry{{Type: nar.Regular, Data: "hello\n"}}, Size: 120,
			Nix32: "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
			Hex: "0d000000000000006e69782d617263686976652d310000000100000000000000" +
				"2800000000000000040000000000000074797065000000000700000000000000" +
				"726567756c6172000800000000000000636f6e74656e74730600000000000000" +
				"68656c6c6f0a000001000000000000002900000000000000"},
		{Name: "exec1", Entries: []Entry{{Type: nar.Executable, Data: "#!/bin/sh\necho hi\n"}}, Size: 168,
			Nix32: "183p8jhjfcpk6kac6hxwp4gzp9brkvkibylz27jfbvgd5kqcq2jy",
			Hex: "0d000000000000006e69782d617263686976652d310000000100000000000000" +
				"2800000000000000040000000000000074797065000000000700000000000000" +
				"726567756c6172000a0000000000000065786563757461626c65000000000000" +
				"00000000000000000800000000000000636f6e74656e74731200000000000000" +
				"23212f62696e2f73680a6563686f2068690a0000000000000100000000000000" +
				"2900000000000000"},
		{Name: "link1", Entries: []Entry{{Type: nar.Symlink, Target: "/gnu/store/target-1.0"}}, Size: 136,
			Nix32: "1cmfzw65z4p3wnqgnyq4pj7y8q1srpagqb67n0r2d4x6zhlcr2pr",
			Hex: "0d000000000000006e69782d617263686976652d310000000100000000000000" +
				"2800000000000000040000000000000074797065000000000700000000000000" +
				"73796d6c696e6b00060000000000000074617267657400001500000000000000" +
				"2f676e752f73746f72652f7461726765742d312e300000000100000000000000" +
				"2900000000000000"},
		{Name: "empty", Entries: []Entry{{Type: nar.Regular}}, Size: 112,
			Nix32: "0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p",
			Hex: "0d000000000000006e69782d617263686976652d310000000100000000000000" +
				"2800000000000000040000000000000074797065000000000700000000000000" +
				"726567756c6172000800000000000000636f6e74656e74730000000000000000" +
				"01000000000000002900000000000000"},
		{Name: "emptydir", Entries: []Entry{{Type: nar.Directory}}, Size: 96,
			Nix32: "0sjjj9z1dhilhpc8pq4154czrb79z9cm044jvn75kxcjv6v5l2m5",
			Hex: "0d000000000000006e69782d617263686976652d310000000100000000000000" +
				"2800000000000000040000000000000074797065000000000900000000000000" +
				"6469726563746f72790000000000000001000000000000002900000000000000"},
		{Name: "tree", Entries: Tree(), Size: 1256,
			Nix32: "00f89byy0fpkv87ajlllhjzidpa4nncghhxscmpqmv3zaj074kyq"},
	}
}

// Tree is the spec's `tree`: B, a, sub/x (executable), zlink -> a, Ä.
func Tree() []Entry {
	return []Entry{
		{Type: nar.Directory},
		{Path: "B", Type: nar.Regular, Data: "bee"},
		{Path: "a", Type: nar.Regular, Data: "A"},
		{Path: "sub", Type: nar.Directory},
		{Path: "sub/x", Type: nar.Executable, Data: "x"},
		{Path: "zlink", Type: nar.Symlink, Target: "a"},
		{Path: "Ä", Type: nar.Regular, Data: "ä"},
	}
}

// Build creates the tree at root (which must not exist yet) and returns
// root. Parents come before children in entries.
func Build(t testing.TB, root string, entries []Entry) string {
	t.Helper()
	for _, e := range entries {
		p := root
		if e.Path != "" {
			p = filepath.Join(root, filepath.FromSlash(e.Path))
		}
		var err error
		switch e.Type {
		case nar.Regular:
			err = os.WriteFile(p, []byte(e.Data), 0o644)
		case nar.Executable:
			err = os.WriteFile(p, []byte(e.Data), 0o755)
		case nar.Symlink:
			err = os.Symlink(e.Target, p)
		case nar.Directory:
			err = os.Mkdir(p, 0o755)
		}
		if err != nil {
			t.Fatalf("build test tree: %v", err)
		}
	}
	return root
}

// NixStore returns the path of nix-store, or skips the test saying what is
// absent.
func NixStore(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("nix-store")
	if err != nil {
		t.Skip("nix-store (Debian package nix-bin) is not installed: no independent nar writer to compare with")
	}
	return p
}

// NixDump returns `nix-store --dump path`.
func NixDump(t testing.TB, path string) []byte {
	t.Helper()
	out, err := exec.Command(NixStore(t), "--dump", path).Output()
	if err != nil {
		t.Fatalf("nix-store --dump %s: %v", path, stderr(err))
	}
	return out
}

// NixHash returns `nix-hash --type sha256 --base32 path`, the nix32 NarHash.
func NixHash(t testing.TB, path string) string {
	t.Helper()
	p, err := exec.LookPath("nix-hash")
	if err != nil {
		t.Skip("nix-hash (Debian package nix-bin) is not installed: no independent NarHash to compare with")
	}
	out, err := exec.Command(p, "--type", "sha256", "--base32", path).Output()
	if err != nil {
		t.Fatalf("nix-hash %s: %v", path, stderr(err))
	}
	return string(bytes.TrimSpace(out))
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return err.Error() + ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return err.Error()
}
