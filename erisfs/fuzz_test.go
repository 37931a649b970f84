package erisfs

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseIndex feeds arbitrary bytes to the index decoder. It must never
// panic; what it accepts must be a valid tree (names, targets, kinds) that
// re-encodes to exactly the input, and its errors must match one of the
// package's sentinels. The seed corpus in testdata/fuzz/FuzzParseIndex
// holds valid indexes and one of each hostile kind of TestHostileIndex.
func FuzzParseIndex(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		tree, err := parse(data, nil, OpenOptions{Limits: Limits{MaxEntries: 1 << 12, MaxIndexSize: 1 << 20}})
		if err != nil {
			if !errors.Is(err, ErrInvalidIndex) && !errors.Is(err, ErrLimit) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		var items []item
		for e := range tree.All() {
			if e.parent != nil {
				if why := checkName(e.name); why != "" {
					t.Fatalf("accepted name %q: %s", e.name, why)
				}
				if e.parent.Child(e.name) != e {
					t.Fatalf("%q not found in its parent", e.Path())
				}
			}
			switch e.kind {
			case Directory:
				if e.parent != nil && e.Len() == 0 {
					t.Fatalf("empty directory %q", e.Path())
				}
				continue
			case Symlink:
				if checkTarget(e.target) != "" || !utf8.ValidString(e.target) {
					t.Fatalf("accepted target %q", e.target)
				}
			case Regular, Executable:
				if e.cap.IsZero() {
					t.Fatalf("file %q without a capability", e.Path())
				}
			default:
				t.Fatalf("kind %v", e.kind)
			}
			var comps []string
			for p := e; p.parent != nil; p = p.parent {
				comps = append([]string{p.name}, comps...)
			}
			items = append(items, item{path: comps, kind: e.kind, cap: e.cap, target: e.target})
		}
		c, _ := newCodec(Limits{}, true)
		again, err := c.marshal(items)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted index does not re-encode to itself: %v", err)
		}
		if _, err := fs.ReadDir(tree.FS(t.Context()), "."); err != nil && tree.Root().IsDir() {
			t.Fatalf("ReadDir(.): %v", err)
		}
	})
}

var updateCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite the seed corpus of FuzzParseIndex in testdata/fuzz")

// TestFuzzCorpus writes (with -update-fuzz-corpus) and checks the seed
// corpus of FuzzParseIndex: one valid index per vector and generated tree,
// and each hostile index of TestHostileIndex.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseIndex")
	if *updateCorpus {
		seeds := map[string][]byte{}
		for _, h := range hostileIndexes(t) {
			seeds["hostile-"+strings.ReplaceAll(h.name, " ", "-")] = h.data
		}
		maps.Copy(seeds, sampleIndexes(t, 12))
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := os.ReadDir(dir)
	if err != nil || len(files) < 20 {
		t.Fatalf("seed corpus: %d files, %v", len(files), err)
	}
}
