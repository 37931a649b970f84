package erisfs

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
)

// node is what a test tree holds at one path.
type node struct {
	kind    Kind // Regular, Executable or Symlink
	content []byte
	target  string
}

// spec is a test tree: slash-separated paths to files and symlinks;
// directories are implied, as in ERIS-FS. The empty path is a single-file
// tree.
type spec map[string]node

func reg(s string) node      { return node{kind: Regular, content: []byte(s)} }
func exe(s string) node      { return node{kind: Executable, content: []byte(s)} }
func link(t string) node     { return node{kind: Symlink, target: t} }
func regBytes(b []byte) node { return node{kind: Regular, content: b} }

// write creates s under dir (which must exist) in the order given by paths.
func (s spec) write(t testing.TB, dir string, paths []string) {
	t.Helper()
	for _, p := range paths {
		n := s[p]
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch n.kind {
		case Regular, Executable:
			mode := fs.FileMode(0o644)
			if n.kind == Executable {
				mode = 0o755
			}
			if err := os.WriteFile(full, n.content, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(full, mode); err != nil { // umask
				t.Fatal(err)
			}
		case Symlink:
			if err := os.Symlink(n.target, full); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// paths returns the paths of s sorted.
func (s spec) paths() []string {
	ps := make([]string, 0, len(s))
	for p := range s {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// writeDir writes s into a new temporary directory and returns it.
func (s spec) writeDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	s.write(t, dir, s.paths())
	return dir
}

// check compares a decoded tree with s: every path with its kind, content
// and target, and nothing else.
func (s spec) check(t testing.TB, ctx context.Context, tree *Tree) {
	t.Helper()
	seen := 0
	for e := range tree.All() {
		if e.IsDir() {
			if _, ok := s[e.Path()]; ok {
				t.Errorf("%q: directory in the tree, %v in the spec", e.Path(), s[e.Path()].kind)
			}
			continue
		}
		seen++
		want, ok := s[e.Path()]
		if !ok {
			t.Errorf("%q: %v in the tree, not in the spec", e.Path(), e.Kind())
			continue
		}
		if e.Kind() != want.kind {
			t.Errorf("%q: kind %v, want %v", e.Path(), e.Kind(), want.kind)
			continue
		}
		switch e.Kind() {
		case Symlink:
			if e.Target() != want.target {
				t.Errorf("%q: target %q, want %q", e.Path(), e.Target(), want.target)
			}
		default:
			got, err := tree.ReadFile(ctx, e)
			if err != nil {
				t.Errorf("%q: %v", e.Path(), err)
			} else if !bytes.Equal(got, want.content) {
				t.Errorf("%q: content of %d bytes differs from the %d written", e.Path(), len(got), len(want.content))
			}
		}
	}
	if seen != len(s) {
		t.Errorf("tree has %d files and symlinks, spec %d", seen, len(s))
	}
}

// roundTrip encodes dir, opens the result and returns the tree.
func roundTrip(t testing.TB, ctx context.Context, dir string, store *eristest.Store) (eris.ReadCapability, EncodeStats, *Tree) {
	t.Helper()
	rc, st, err := EncodeDir(ctx, dir, store, EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeDir(%s): %v", dir, err)
	}
	tree, err := Open(ctx, rc, store, OpenOptions{})
	if err != nil {
		t.Fatalf("Open(%s): %v", rc, err)
	}
	return rc, st, tree
}

// Sizes around the block boundaries of ERIS: 1 KiB leaves below 16 KiB, 32
// KiB leaves above, padding always added (so a multiple of the block size
// gets an extra block), and the first internal level (16 leaves of 1 KiB).
var boundarySizes = []int{0, 1, 1023, 1024, 1025, 15 << 10, 16<<10 - 1, 16 << 10, 16<<10 + 1, 32<<10 - 1, 32 << 10, 32<<10 + 1, 64<<10 + 7}

// nameRunes are the pieces of generated names: ASCII, Latin-1, CJK, emoji
// (4-byte UTF-8), a combining mark, spaces and punctuation.
var nameRunes = []string{"a", "b", "Z", "0", "-", "_", ".", " ", "é", "ß", "ø", "語", "日本", "😀", "e\u0301", "~", "+", "=", "@", "#", "%"}

func randName(r *rand.Rand) string {
	for {
		var b strings.Builder
		for n := 1 + r.IntN(12); n > 0; n-- {
			b.WriteString(nameRunes[r.IntN(len(nameRunes))])
		}
		if s := b.String(); checkName(s) == "" {
			return s
		}
	}
}

func randContent(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// genSpec generates a random tree: nested directories up to depth deep,
// files of boundary sizes, some of them equal, executables, and symlinks
// (relative ones resolving inside the tree when resolvable is set, also
// dangling and absolute ones otherwise).
func genSpec(r *rand.Rand, files, deep int, resolvable bool) spec {
	s := spec{}
	dirs := []string{""}
	var targets []string
	for range files {
		parent := dirs[r.IntN(len(dirs))]
		p := strings.TrimPrefix(parent+"/"+randName(r), "/")
		if _, taken := s[p]; taken || slices.Contains(dirs, p) || isDirOf(s, p) || hasFileAncestor(s, p) {
			continue
		}
		switch x := r.IntN(10); {
		case x < 2 && strings.Count(p, "/") < deep:
			dirs = append(dirs, p)
			continue
		case x < 4 && len(targets) > 0:
			dst := targets[r.IntN(len(targets))]
			s[p] = link(relTarget(parent, dst))
			if !resolvable && r.IntN(3) == 0 {
				s[p] = link([]string{"/gnu/store/xyz-dangling", "../../nowhere/" + randName(r), "missing"}[r.IntN(3)])
			}
		case x < 5 && len(targets) > 0:
			// The same content as an earlier file: deduplicated.
			if n := s[targets[r.IntN(len(targets))]]; n.kind != Symlink {
				s[p] = node{kind: Regular, content: n.content}
			}
		default:
			n := regBytes(randContent(r, boundarySizes[r.IntN(len(boundarySizes))]))
			if r.IntN(4) == 0 {
				n.kind = Executable
			}
			s[p] = n
			targets = append(targets, p)
		}
	}
	// A deep path, to the depth asked for.
	p := ""
	for range deep {
		p += randName(r) + "/"
	}
	if !hasFileAncestor(s, p+"deep") {
		s[p+"deep"] = reg("at the bottom")
	}
	return s
}

func isDirOf(s spec, p string) bool {
	for q := range s {
		if strings.HasPrefix(q, p+"/") {
			return true
		}
	}
	return false
}

func hasFileAncestor(s spec, p string) bool {
	for i := range len(p) {
		if p[i] == '/' {
			if _, ok := s[p[:i]]; ok {
				return true
			}
		}
	}
	return false
}

// relTarget is a relative symlink target from directory dir to path dst.
func relTarget(dir, dst string) string {
	up := 0
	if dir != "" {
		up = strings.Count(dir, "/") + 1
	}
	return strings.Repeat("../", up) + dst
}

func mustHave(t testing.TB, err error, target error, substr ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one matching %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("error %q does not match %v", err, target)
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not mention %q", err, s)
		}
	}
}

func describe(s spec) string {
	var b strings.Builder
	for _, p := range s.paths() {
		fmt.Fprintf(&b, "%q %v %d\n", p, s[p].kind, len(s[p].content))
	}
	return b.String()
}

// sampleIndexes returns real indexes by name: the test vectors'
// ("vector-N") and those of three generated trees of about files entries
// ("generated-N").
func sampleIndexes(t *testing.T, files int) map[string][]byte {
	t.Helper()
	indexes := map[string][]byte{}
	for i, v := range loadVectors(t) {
		b, err := hex.DecodeString(v.IndexHex)
		if err != nil {
			t.Fatal(err)
		}
		indexes[fmt.Sprintf("vector-%d", i)] = b
	}
	for seed := range 3 {
		r := rand.New(rand.NewPCG(uint64(seed), 5))
		s := genSpec(r, files, 4, false)
		store := eristest.NewStore()
		rc, _, err := EncodeDir(t.Context(), s.writeDir(t), store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := readIndex(t.Context(), rc, store, eris.ReaderOptions{}, DefaultMaxIndexSize, nil)
		if err != nil {
			t.Fatal(err)
		}
		indexes[fmt.Sprintf("generated-%d", seed)] = b
	}
	return indexes
}
