package erisfs

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/vectors/erisfs-vectors.json from the current encoder (review the diff!)")

const vectorsFile = "testdata/vectors/erisfs-vectors.json"

// vector is one golden tree: its files, and the index and URN EncodeDir
// gives with the default options.
type vector struct {
	Name     string       `json:"name"`
	Files    []vectorFile `json:"files"`
	IndexHex string       `json:"index_hex"`
	URN      string       `json:"urn"`
}

type vectorFile struct {
	Path    string `json:"path"` // "" for a single-file tree
	Kind    string `json:"kind"` // regular, executable, symlink
	Content string `json:"content,omitempty"`
	Repeat  int    `json:"repeat,omitempty"` // content repeated this many times
	Target  string `json:"target,omitempty"`
}

func (v vector) spec() spec {
	s := spec{}
	for _, f := range v.Files {
		switch f.Kind {
		case "regular", "executable":
			n := node{kind: Regular, content: []byte(strings.Repeat(f.Content, max(1, f.Repeat)))}
			if f.Kind == "executable" {
				n.kind = Executable
			}
			s[f.Path] = n
		case "symlink":
			s[f.Path] = link(f.Target)
		}
	}
	return s
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	if *updateVectors {
		writeVectors(t)
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

// writeVectors regenerates the golden file from the trees below.
func writeVectors(t *testing.T) {
	vs := []vector{
		{Name: "store item", Files: []vectorFile{
			{Path: "bin/hello", Kind: "executable", Content: "\x7fELF not really", Repeat: 100},
			{Path: "share/doc/hello/README", Kind: "regular", Content: "GNU Hello greets you.\n", Repeat: 1000},
			{Path: "share/info/hello.info", Kind: "regular", Content: "info\n"},
			{Path: "share/info/dir", Kind: "regular", Content: "info\n"},
			{Path: "lib", Kind: "symlink", Target: "share"},
			{Path: "libc.so.6", Kind: "symlink", Target: "/gnu/store/ln6hxqjvz6m9gdd9s97pivlqck7hzs99-glibc-2.35/lib/libc.so.6"},
			{Path: "empty", Kind: "regular"},
		}},
		{Name: "unicode names", Files: []vectorFile{
			{Path: "日本語/ファイル", Kind: "regular", Content: "こんにちは"},
			{Path: "emoji 😀/e\u0301", Kind: "regular", Content: "combining"},
			{Path: "a b/c~d", Kind: "symlink", Target: "../日本語/ファイル"},
		}},
		{Name: "empty root", Files: nil},
	}
	for i := range vs {
		s := vs[i].spec()
		dir := s.writeDir(t)
		store := eristest.NewStore()
		rc, _, err := EncodeDir(t.Context(), dir, store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		idx, err := readIndex(t.Context(), rc, store, eris.ReaderOptions{}, DefaultMaxIndexSize, nil)
		if err != nil {
			t.Fatal(err)
		}
		vs[i].URN, vs[i].IndexHex = rc.URN(), hex.EncodeToString(idx)
	}
	b, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
