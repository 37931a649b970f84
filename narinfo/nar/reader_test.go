package nar_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

// enc builds nar bytes item by item: strings get their length and padding,
// uint64s their 8 bytes, raw bytes go in as they are.
type enc struct{ bytes.Buffer }

func (e *enc) s(items ...string) *enc {
	for _, s := range items {
		e.u(uint64(len(s)))
		e.WriteString(s)
		e.Write(make([]byte, -len(s)&7))
	}
	return e
}

func (e *enc) u(v uint64) *enc {
	binary.Write(&e.Buffer, binary.LittleEndian, v)
	return e
}

func (e *enc) raw(b string) *enc { e.WriteString(b); return e }

func start() *enc { return new(enc).s("nix-archive-1") }

// file appends a complete regular-file node.
func (e *enc) file(data string) *enc {
	return e.s("(", "type", "regular", "contents", data, ")")
}

func (e *enc) entry(name string, node func(*enc) *enc) *enc {
	e.s("entry", "(", "name", name, "node")
	node(e)
	return e.s(")")
}

func fileNode(data string) func(*enc) *enc { return func(e *enc) *enc { return e.file(data) } }

func TestReaderVectors(t *testing.T) {
	for _, v := range nartest.Vectors() {
		if v.Hex == "" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			b, _ := hex.DecodeString(v.Hex)
			r := nar.NewReader(bytes.NewReader(b))
			h, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			want := v.Entries[0]
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if h.Path != "" || h.Type != want.Type || h.LinkTarget != want.Target || string(data) != want.Data || h.Size != int64(len(want.Data)) {
				t.Errorf("got %+v %q, want %+v", h, data, want)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("got %v at the end, want io.EOF", err)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("io.EOF is not sticky: %v", err)
			}
			if r.Offset() != v.Size {
				t.Errorf("offset %d at the end, want %d", r.Offset(), v.Size)
			}
		})
	}
}

// TestReaderTree reads the spec tree written by nix-store and checks every
// header and content, skipping one file's contents unread.
func TestReaderTree(t *testing.T) {
	v := nartest.Vectors()[5]
	root := nartest.Build(t, t.TempDir()+"/tree", v.Entries)
	b := nartest.NixDump(t, root)
	r := nar.NewReader(bytes.NewReader(b))
	for i, want := range v.Entries {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if h.Path != want.Path || h.Type != want.Type || h.LinkTarget != want.Target || h.Size != int64(len(want.Data)) {
			t.Errorf("entry %d: got %+v, want %+v", i, h, want)
		}
		if want.Path == "a" {
			continue // leave contents unread: Next must skip them
		}
		data, _ := io.ReadAll(r)
		if string(data) != want.Data {
			t.Errorf("%s: contents %q, want %q", want.Path, data, want.Data)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("got %v at the end, want io.EOF", err)
	}
}

func TestReaderRejects(t *testing.T) {
	dir := func(entries ...func(*enc) *enc) *enc {
		e := start().s("(", "type", "directory")
		for _, f := range entries {
			f(e)
		}
		return e.s(")")
	}
	ent := func(name string) func(*enc) *enc {
		return func(e *enc) *enc { return e.entry(name, fileNode("x")) }
	}
	tests := []struct {
		name   string
		nar    []byte
		offset int64  // of the FormatError
		reason string // substring of the error
	}{
		{"empty input", nil, 0, "ends early"},
		{"wrong magic", new(enc).s("nix-archive-2").Bytes(), 0, `expected "nix-archive-1"`},
		{"huge magic length", new(enc).u(1 << 60).Bytes(), 0, "exceeds"},
		{"unknown type", start().s("(", "type", "fifo", ")").Bytes(), 56, `unknown node type "fifo"`},
		{"non-zero padding", start().u(1).raw("(\x00\x00\x00\x00\x00\x01\x00").Bytes(), 33, "non-zero padding"},
		{"non-zero contents padding", start().s("(", "type", "regular", "contents").u(1).raw("a\x00\x00\x00\x00\x00\x00\x07").s(")").Bytes(), 97, "non-zero padding"},
		{"truncated contents", start().s("(", "type", "regular", "contents").u(100).raw("abc").Bytes(), 99, "ends early"},
		{"absurd file size", start().s("(", "type", "regular", "contents").u(1 << 63).Bytes(), 88, "absurd size"},
		{"executable flag not empty", start().s("(", "type", "regular", "executable", "x").Bytes(), 96, `expected ""`},
		{"missing contents", start().s("(", "type", "regular", ")").Bytes(), 72, `expected "contents"`},
		{"trailing data", start().file("x").raw("\x00").Bytes(), 120, "trailing data"},
		{"trailing archive", start().file("x").s("nix-archive-1").Bytes(), 120, "trailing data"},
		{"empty symlink target", start().s("(", "type", "symlink", "target", "", ")").Bytes(), 88, "empty symlink target"},
		{"long symlink target", start().s("(", "type", "symlink", "target", strings.Repeat("a", 4096), ")").Bytes(), 88, "exceeds 4095"},
		{"NUL in target", start().s("(", "type", "symlink", "target", "a\x00b", ")").Bytes(), 88, "NUL"},
		{"dot dot", dir(ent("..")).Bytes(), 128, `entry name ".."`},
		{"dot", dir(ent(".")).Bytes(), 128, `entry name "."`},
		{"slash", dir(ent("a/b")).Bytes(), 128, "'/'"},
		{"NUL in name", dir(ent("a\x00")).Bytes(), 128, "NUL"},
		{"empty name", dir(ent("")).Bytes(), 128, "empty entry name"},
		{"long name", dir(ent(strings.Repeat("n", 256))).Bytes(), 128, "exceeds 255"},
		{"duplicate", dir(ent("a"), ent("a")).Bytes(), 320, "duplicate entry"},
		{"bad order", dir(ent("b"), ent("a")).Bytes(), 320, "not in byte order"},
		{"unsorted unicode", dir(ent("Ä"), ent("a")).Bytes(), 320, "not in byte order"},
		{"garbage in directory", start().s("(", "type", "directory", "entries").Bytes(), 80, `expected "entry" or ")"`},
		{"unclosed entry", start().s("(", "type", "directory", "entry", "(", "name", "a", "node").file("x").s("entry").Bytes(), 256, `expected ")"`},
		{"truncated directory", start().s("(", "type", "directory").Bytes(), 80, "ends early"},
		{"token too long", start().s("(", "type", strings.Repeat("r", 17)).Bytes(), 56, "exceeds 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readAll(tt.nar)
			var fe *nar.FormatError
			if !errors.As(err, &fe) || !errors.Is(err, nar.ErrFormat) {
				t.Fatalf("got %v, want a *FormatError", err)
			}
			if fe.Offset != tt.offset || !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("got %v, want offset %d and %q", err, tt.offset, tt.reason)
			}
		})
	}
	t.Run("too deep", func(t *testing.T) {
		e := start()
		for range nar.MaxDepth + 1 {
			e.s("(", "type", "directory", "entry", "(", "name", "d", "node")
		}
		if err := readAll(e.Bytes()); !errors.Is(err, nar.ErrFormat) || !strings.Contains(err.Error(), "deeper") {
			t.Fatalf("got %v, want a nesting error", err)
		}
	})
}

// readAll reads a whole nar, contents included.
func readAll(b []byte) error {
	r := nar.NewReader(bytes.NewReader(b))
	for {
		_, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}

// errReader fails after its data.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestReaderIOError(t *testing.T) {
	boom := errors.New("boom")
	r := nar.NewReader(&errReader{data: start().s("(", "type", "regular", "contents").u(10).raw("abc").Bytes(), err: boom})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(r)
	if !errors.Is(err, boom) || errors.Is(err, nar.ErrFormat) {
		t.Fatalf("got %v, want the reader's own error", err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("error is not sticky: %v", err)
	}
}
