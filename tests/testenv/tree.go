package testenv

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"erismount/eris"
	"erismount/erisfs"
)

// Node is what a test tree holds at one path: a regular or executable file
// with its content, or a symlink with its target.
type Node struct {
	Kind    erisfs.Kind // Regular, Executable or Symlink
	Content []byte
	Target  string
}

// File, Exec, Bytes and Link make nodes.
func File(s string) Node      { return Node{Kind: erisfs.Regular, Content: []byte(s)} }
func Exec(s string) Node      { return Node{Kind: erisfs.Executable, Content: []byte(s)} }
func Bytes(b []byte) Node     { return Node{Kind: erisfs.Regular, Content: b} }
func Link(target string) Node { return Node{Kind: erisfs.Symlink, Target: target} }

// Spec is a test tree: slash-separated paths to files and symlinks;
// directories are implied, as in ERIS-FS.
type Spec map[string]Node

// Paths returns the paths of s sorted.
func (s Spec) Paths() []string {
	ps := make([]string, 0, len(s))
	for p := range s {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// Bytes is the total content of the files of s.
func (s Spec) Bytes() int64 {
	var n int64
	for _, node := range s {
		n += int64(len(node.Content))
	}
	return n
}

// WriteDir writes s into a new temporary directory and returns its path.
// Files are 0644, executables 0755, whatever the umask.
func (s Spec) WriteDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range s.Paths() {
		n := s[p]
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch n.Kind {
		case erisfs.Regular, erisfs.Executable:
			mode := fs.FileMode(0o644)
			if n.Kind == erisfs.Executable {
				mode = 0o755
			}
			if err := os.WriteFile(full, n.Content, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(full, mode); err != nil {
				t.Fatal(err)
			}
		case erisfs.Symlink:
			if err := os.Symlink(n.Target, full); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("testenv: %q: kind %v", p, n.Kind)
		}
	}
	return dir
}

// Random returns n bytes from a generator seeded with seed: the same
// bytes for the same arguments, and incompressible.
func Random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// SampleSizes are file sizes around the ERIS boundaries: empty, 1 KiB
// leaves below 16 KiB and 32 KiB leaves above, padding (a multiple of the
// block size gets one more block), the first internal levels, and files
// past our readahead chunk.
var SampleSizes = []int{0, 1, 1023, 1024, 1025, 16<<10 - 1, 16 << 10, 32<<10 + 1, 100 << 10, 1<<20 + 3, 3<<20 + 17}

// Sample is a tree with one of everything a store item has: files of
// every size in SampleSizes, an executable shell script, nested
// directories, names outside ASCII, two files with the same content,
// relative symlinks to a file and to a directory, an absolute and a
// dangling symlink.
func Sample() Spec {
	s := Spec{
		"bin/hello":               Exec("#!/bin/sh\necho hello from eris \"$@\"\n"),
		"share/doc/README":        File("A sample tree for erismount tests.\n"),
		"share/doc/README.copy":   File("A sample tree for erismount tests.\n"),
		"share/日本語/ünïcødé 😀.txt": File("names are UTF-8\n"),
		"lib/deep/er/still/leaf":  File("at the bottom\n"),
		"bin/hello-link":          Link("hello"),
		"docs":                    Link("share/doc"),
		"abs":                     Link("/gnu/store/00000000000000000000000000000000-nothing"),
		"dangling":                Link("../nowhere"),
	}
	for i, n := range SampleSizes {
		s[fmt.Sprintf("data/size-%08d", n)] = Bytes(Random(uint64(i+1), n))
	}
	return s
}

// Wide is a tree of many small files in a few directories (and one large
// file), the shape where reading one file must not fetch the others.
func Wide(dirs, filesPerDir, size int) Spec {
	s := Spec{"big/blob": Bytes(Random(7, 4<<20))}
	for d := range dirs {
		for f := range filesPerDir {
			s[fmt.Sprintf("d%03d/f%04d", d, f)] = Bytes(Random(uint64(1000+d*filesPerDir+f), size))
		}
	}
	return s
}

// HostBinary returns a node holding the host's executable called name
// (looked up in PATH), or skips the test if there is none.
func HostBinary(t testing.TB, name string) Node {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("testenv: no %s in PATH to copy into the tree: %v", name, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Node{Kind: erisfs.Executable, Content: b}
}

// Publish encodes the tree at dir into p with ERIS-FS and returns its
// capability.
func Publish(t testing.TB, dir string, p eris.BlockPutter) eris.ReadCapability {
	t.Helper()
	rc, _, err := erisfs.EncodeDir(context.Background(), dir, p, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatalf("testenv: publish %s: %v", dir, err)
	}
	return rc
}

// OpenTree opens the tree rc from g.
func OpenTree(t testing.TB, rc eris.ReadCapability, g eris.BlockGetter) *erisfs.Tree {
	t.Helper()
	tree, err := erisfs.Open(context.Background(), rc, g, erisfs.OpenOptions{})
	if err != nil {
		t.Fatalf("testenv: open tree %s: %v", rc, err)
	}
	return tree
}

// Without returns a copy of s without the given paths.
func (s Spec) Without(paths ...string) Spec {
	c := make(Spec, len(s))
	for p, n := range s {
		if !slices.Contains(paths, p) {
			c[p] = n
		}
	}
	return c
}
