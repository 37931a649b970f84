package nar_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

var long = flag.Bool("long", false, "also compare with nix-store on the whole Go source tree")

// goSubtree is a real tree compared with nix-store in ordinary runs; -long
// compares the whole Go source tree.
func goTree(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.Getenv("GOROOT"), "src")
	if os.Getenv("GOROOT") == "" {
		dir = "/usr/local/go/src"
	}
	if !*long {
		dir = filepath.Join(dir, "net")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no Go source tree to serialize: %v", err)
	}
	return dir
}

// TestWriteFSVectors writes the spec's trees (§2.3) from disk and checks
// bytes, size and hash against the spec and against nix-store/nix-hash.
func TestWriteFSVectors(t *testing.T) {
	for _, v := range nartest.Vectors() {
		t.Run(v.Name, func(t *testing.T) {
			root := nartest.Build(t, filepath.Join(t.TempDir(), v.Name), v.Entries)
			var buf bytes.Buffer
			hw := nar.NewHashingWriter(&buf)
			if err := nar.WriteFS(context.Background(), hw, nar.DirFS(root)); err != nil {
				t.Fatal(err)
			}
			sum := hw.Sum()
			if sum.Size != v.Size || sum.Hash.Nix32() != v.Nix32 {
				t.Errorf("got %s, spec says sha256:%s %d", sum, v.Nix32, v.Size)
			}
			if sum.Hash != nar.Hash(sha256.Sum256(buf.Bytes())) || sum.Size != int64(buf.Len()) {
				t.Errorf("HashingWriter disagrees with the bytes written")
			}
			if v.Hex != "" && hex.EncodeToString(buf.Bytes()) != v.Hex {
				t.Errorf("bytes differ from the spec:\n got %x\nwant %s", buf.Bytes(), v.Hex)
			}
			if want := nartest.NixDump(t, root); !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("bytes differ from nix-store --dump (%d vs %d bytes)", buf.Len(), len(want))
			}
			if got := nartest.NixHash(t, root); got != sum.Hash.Nix32() {
				t.Errorf("nix-hash says %s, we say %s", got, sum.Hash.Nix32())
			}
		})
	}
}

// TestWriteFSMapFS writes the spec tree from an in-memory fs.FS.
func TestWriteFSMapFS(t *testing.T) {
	m := fstest.MapFS{
		"B":     {Data: []byte("bee"), Mode: 0o644},
		"a":     {Data: []byte("A"), Mode: 0o444},
		"sub/x": {Data: []byte("x"), Mode: 0o500}, // any 0100 bit: executable
		"zlink": {Data: []byte("a"), Mode: os.ModeSymlink | 0o777},
		"Ä":     {Data: []byte("ä"), Mode: 0o600},
	}
	hw := nar.NewHashingWriter(nil)
	if err := nar.WriteFS(context.Background(), hw, m); err != nil {
		t.Fatal(err)
	}
	if got, want := hw.Sum().String(), "sha256:00f89byy0fpkv87ajlllhjzidpa4nncghhxscmpqmv3zaj074kyq 1256"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestWriteFSRealTree compares with nix-store on a real tree (part of the
// Go source tree; all of it with -long).
func TestWriteFSRealTree(t *testing.T) {
	dir := goTree(t)
	want := nartest.NixDump(t, dir)
	var buf bytes.Buffer
	hw := nar.NewHashingWriter(&buf)
	if err := nar.WriteFS(context.Background(), hw, nar.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("nar of %s differs from nix-store --dump (%d vs %d bytes)", dir, buf.Len(), len(want))
	}
	if got := nartest.NixHash(t, dir); got != hw.Sum().Hash.Nix32() {
		t.Errorf("nix-hash says %s, we say %s", got, hw.Sum().Hash.Nix32())
	}
	// The reader accepts nix-store's output and the writer reproduces it.
	if got := rewrite(t, want); !bytes.Equal(got, want) {
		t.Errorf("read + rewrite of nix-store's nar changed it")
	}
	t.Logf("%s: %d nar bytes, sha256:%s", dir, buf.Len(), hw.Sum().Hash.Nix32())
}

// rewrite reads a nar with a Reader and writes it again with a Writer.
func rewrite(t testing.TB, b []byte) []byte {
	t.Helper()
	out, err := copyNar(b)
	if err != nil {
		t.Fatalf("read + rewrite: %v", err)
	}
	return out
}

func copyNar(b []byte) ([]byte, error) {
	var out bytes.Buffer
	r := nar.NewReader(bytes.NewReader(b))
	w := nar.NewWriter(&out)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := w.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, r); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func TestWriterRejects(t *testing.T) {
	tests := []struct {
		name    string
		headers []nar.Header
	}{
		{"root not first", []nar.Header{{Path: "a", Type: nar.Regular}}},
		{"second root", []nar.Header{{Type: nar.Regular}, {Type: nar.Regular}}},
		{"entry after a file root", []nar.Header{{Type: nar.Regular}, {Path: "a", Type: nar.Regular}}},
		{"out of order", []nar.Header{{Type: nar.Directory}, {Path: "b", Type: nar.Regular}, {Path: "a", Type: nar.Regular}}},
		{"duplicate", []nar.Header{{Type: nar.Directory}, {Path: "a", Type: nar.Regular}, {Path: "a", Type: nar.Regular}}},
		{"dot dot", []nar.Header{{Type: nar.Directory}, {Path: "..", Type: nar.Regular}}},
		{"NUL", []nar.Header{{Type: nar.Directory}, {Path: "a\x00b", Type: nar.Regular}}},
		{"leading slash", []nar.Header{{Type: nar.Directory}, {Path: "/a", Type: nar.Regular}}},
		{"empty component", []nar.Header{{Type: nar.Directory}, {Path: "a//b", Type: nar.Regular}}},
		{"parent is a file", []nar.Header{{Type: nar.Directory}, {Path: "a", Type: nar.Regular}, {Path: "a/b", Type: nar.Regular}}},
		{"closed directory", []nar.Header{{Type: nar.Directory}, {Path: "a", Type: nar.Directory}, {Path: "b", Type: nar.Directory}, {Path: "a/c", Type: nar.Regular}}},
		{"empty symlink", []nar.Header{{Type: nar.Symlink}}},
		{"negative size", []nar.Header{{Type: nar.Regular, Size: -1}}},
		{"unknown type", []nar.Header{{Type: 9}}},
		{"missing contents", []nar.Header{{Type: nar.Directory}, {Path: "a", Type: nar.Regular, Size: 3}, {Path: "b", Type: nar.Regular}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := nar.NewWriter(io.Discard)
			var err error
			for i := range tt.headers {
				if err = w.WriteHeader(&tt.headers[i]); err != nil {
					break
				}
			}
			if err == nil {
				err = w.Close()
			}
			if !errors.Is(err, nar.ErrFormat) {
				t.Fatalf("got %v, want an error matching ErrFormat", err)
			}
		})
	}
	t.Run("too much contents", func(t *testing.T) {
		w := nar.NewWriter(io.Discard)
		if err := w.WriteHeader(&nar.Header{Type: nar.Regular, Size: 2}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("abc")); !errors.Is(err, nar.ErrFormat) {
			t.Fatalf("got %v, want ErrFormat", err)
		}
	})
	t.Run("after close", func(t *testing.T) {
		w := nar.NewWriter(io.Discard)
		w.WriteHeader(&nar.Header{Type: nar.Directory})
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteHeader(&nar.Header{Path: "a", Type: nar.Directory}); err != nar.ErrWriteAfterClose {
			t.Fatalf("got %v, want ErrWriteAfterClose", err)
		}
	})
}

// TestWalkRejects: trees that have no nar.
func TestWalkRejects(t *testing.T) {
	t.Run("fifo", func(t *testing.T) {
		m := fstest.MapFS{"p": {Mode: os.ModeNamedPipe}}
		if err := nar.WriteFS(context.Background(), io.Discard, m); err == nil {
			t.Fatal("a named pipe was serialized")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m := fstest.MapFS{"a": {Data: []byte("x")}}
		if err := nar.WriteFS(ctx, io.Discard, m); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("symlink at root on disk", func(t *testing.T) {
		dir := t.TempDir()
		link := filepath.Join(dir, "l")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		hw := nar.NewHashingWriter(nil)
		if err := nar.WriteFS(context.Background(), hw, nar.DirFS(link)); err != nil {
			t.Fatal(err)
		}
		if got := nartest.NixHash(t, link); got != hw.Sum().Hash.Nix32() {
			t.Errorf("symlink root: nix-hash %s, we %s", got, hw.Sum().Hash.Nix32())
		}
	})
}

// growingFS returns a file whose Stat size is smaller than its contents.
type growingFS struct{ fstest.MapFS }

type growingFile struct {
	fs.File
}

func (f growingFile) Stat() (fs.FileInfo, error) {
	fi, err := f.File.Stat()
	return shrunkInfo{fi}, err
}

type shrunkInfo struct{ fs.FileInfo }

func (i shrunkInfo) Size() int64 { return i.FileInfo.Size() - 1 }

func (g growingFS) Open(name string) (fs.File, error) {
	f, err := g.MapFS.Open(name)
	if err != nil || name == "." {
		return f, err
	}
	return growingFile{f}, nil
}

func TestWalkFileChanged(t *testing.T) {
	g := growingFS{fstest.MapFS{"a": {Data: []byte("abc")}}}
	err := nar.WriteFS(context.Background(), io.Discard, g)
	if !errors.Is(err, nar.ErrChanged) {
		t.Fatalf("got %v, want ErrChanged", err)
	}
}
