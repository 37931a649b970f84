package erisfs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"erismount/eris"
	"erismount/eris/eristest"
)

// testCap is a real capability (of the content "x").
func testCap(t testing.TB) eris.ReadCapability {
	t.Helper()
	rc, err := eris.Encode(t.Context(), strings.NewReader("x"), eristest.NewStore(), eris.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// enc is a CBOR encoding helper for hand-made indexes.
func enc(t testing.TB, v any) []byte {
	t.Helper()
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kv is one raw map pair of a hand-made index.
type kv struct{ k, v []byte }

// rawIndex assembles an index from raw map pairs, in the order given (so
// tests can break the canonical order), under header (nil: the correct
// tag, array and version).
func rawIndex(header []byte, pairs ...kv) []byte {
	if header == nil {
		header = []byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x01} // 1701996916([1, …
	}
	b := append([]byte(nil), header...)
	b = append(b, 0xa0|byte(len(pairs))) // map(n), n < 24
	for _, p := range pairs {
		b = append(b, p.k...)
		b = append(b, p.v...)
	}
	return b
}

func capBytes(t testing.TB, rc eris.ReadCapability) []byte {
	b, err := rc.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIndexBytes checks the index format against bytes assembled by hand
// from the CDDL (ERIS-FS, "ERIS-FS Index") and RFC 8949, independently of
// the CBOR library: a file "a", an executable "bin/x" and a symlink "b" -> "a".
func TestIndexBytes(t *testing.T) {
	rc := testCap(t)
	bin, _ := rc.MarshalBinary()
	capCBOR := append([]byte{0xd9, 0x01, 0x14, 0x58, 0x42}, bin...) // 276(h'…' 66 bytes)
	var want []byte
	want = append(want, 0xda, 0x65, 0x72, 0x69, 0x74) // tag 1701996916 = 0x65726974
	want = append(want, 0x82, 0x01)                   // [1,
	want = append(want, 0xa3)                         // {3 pairs, keys sorted bytewise by encoding:
	want = append(want, 0x81, 0x61, 'a')              //  ["a"] =>
	want = append(want, 0x82, 0x00)                   //   [0,
	want = append(want, capCBOR...)                   //    cap]
	want = append(want, 0x81, 0x61, 'b')              //  ["b"] =>
	want = append(want, 0x82, 0x02, 0x61, 'a')        //   [2, "a"]
	want = append(want, 0x82, 0x63, 'b', 'i', 'n')    //  ["bin",
	want = append(want, 0x61, 'x')                    //   "x"] =>
	want = append(want, 0x82, 0x01)                   //   [1,
	want = append(want, capCBOR...)                   //    cap]}]

	c, err := newCodec(Limits{}, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.marshal([]item{
		{path: []string{"bin", "x"}, kind: Executable, cap: rc},
		{path: []string{"b"}, kind: Symlink, target: "a"},
		{path: []string{"a"}, kind: Regular, cap: rc},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("index\n got %x\nwant %x", got, want)
	}
	tree, err := parse(want, nil, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var listing []string
	for e := range tree.All() {
		listing = append(listing, e.Path()+" "+e.Kind().String())
	}
	wantList := "[ directory, a regular file, b symlink, bin directory, bin/x executable file]"
	if got := "[" + strings.Join(listing, ", ") + "]"; got != wantList {
		t.Errorf("tree %s, want %s", got, wantList)
	}
}

// hostileCase is an index the decoder must refuse, and how.
type hostileCase struct {
	name   string
	data   []byte
	opts   OpenOptions
	err    error
	substr string
}

func hostileIndexes(t testing.TB) []hostileCase {
	rc := testCap(t)
	capb := capBytes(t, rc)
	bin, _ := rc.MarshalBinary()
	key := func(comps ...string) []byte { return enc(t, append([]string{}, comps...)) }
	file := enc(t, []any{0, cbor.RawMessage(capb)})
	sym := func(target any) []byte { return enc(t, []any{2, target}) }
	tagged := func(n uint64, v any) []byte { return enc(t, cbor.Tag{Number: n, Content: v}) }
	badText := []byte{0x62, 'a', 0xff} // text string "a\xff"
	valid := rawIndex(nil, kv{key("a"), file})

	return []hostileCase{
		{"empty input", nil, OpenOptions{}, ErrInvalidIndex, "EOF"},
		{"not CBOR", []byte{0xff}, OpenOptions{}, ErrInvalidIndex, ""},
		{"untagged", enc(t, []any{1, map[string]any{}}), OpenOptions{}, ErrInvalidIndex, ""},
		{"wrong tag", rawIndex([]byte{0xda, 0x65, 0x72, 0x69, 0x73, 0x82, 0x01}), OpenOptions{}, ErrInvalidIndex, "tag 1701996915"},
		{"version 2", rawIndex([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x02}), OpenOptions{}, ErrInvalidIndex, "unsupported version 2"},
		{"version text", rawIndex([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x61, '1'}), OpenOptions{}, ErrInvalidIndex, "version"},
		{"three items", tagged(IndexTag, []any{1, map[string]any{}, 0}), OpenOptions{}, ErrInvalidIndex, "array of 3"},
		{"not an array", tagged(IndexTag, map[string]any{}), OpenOptions{}, ErrInvalidIndex, "not an array"},
		{"entries not a map", tagged(IndexTag, []any{1, []any{}}), OpenOptions{}, ErrInvalidIndex, ""},
		{"key not an array", rawIndex(nil, kv{enc(t, "a"), file}), OpenOptions{}, ErrInvalidIndex, "not a path"},
		{"key with an integer", rawIndex(nil, kv{enc(t, []any{1}), file}), OpenOptions{}, ErrInvalidIndex, "not a path"},
		{"empty component", rawIndex(nil, kv{key("a", ""), file}), OpenOptions{}, ErrInvalidIndex, `path ["a" ""]: empty path component`},
		{"empty only component", rawIndex(nil, kv{key(""), file}), OpenOptions{}, ErrInvalidIndex, `path [""]: empty path component`},
		{"dot", rawIndex(nil, kv{key(".", "a"), file}), OpenOptions{}, ErrInvalidIndex, `path ["." "a"]: path component . not allowed`},
		{"dot dot", rawIndex(nil, kv{key("..", "etc", "passwd"), file}), OpenOptions{}, ErrInvalidIndex, `path [".." "etc" "passwd"]`},
		{"slash", rawIndex(nil, kv{key("a/b"), file}), OpenOptions{}, ErrInvalidIndex, "contains '/'"},
		{"NUL in a name", rawIndex(nil, kv{key("a\x00b"), file}), OpenOptions{}, ErrInvalidIndex, "contains NUL"},
		{"non-UTF-8 name", rawIndex(nil, kv{append([]byte{0x81}, badText...), file}), OpenOptions{}, ErrInvalidIndex, `path ["a\xff"]: path component is not valid UTF-8`},
		{"duplicate path", rawIndex(nil, kv{key("a"), file}, kv{key("a"), file}), OpenOptions{}, ErrInvalidIndex, `path "a": duplicate path`},
		{"duplicate path, other encoding", rawIndex(nil, kv{key("a"), file}, kv{[]byte{0x81, 0x78, 0x01, 'a'}, file}), OpenOptions{AllowNonDeterministic: true}, ErrInvalidIndex, `path "a": duplicate path`},
		{"duplicate path, other encoding, strict", rawIndex(nil, kv{key("a"), file}, kv{[]byte{0x81, 0x78, 0x01, 'a'}, file}), OpenOptions{}, ErrInvalidIndex, `path "a": duplicate path`},
		{"file used as directory", rawIndex(nil, kv{key("a"), file}, kv{key("a", "b"), file}), OpenOptions{}, ErrInvalidIndex, `path "a": is a regular file and also a directory`},
		{"symlink used as directory", rawIndex(nil, kv{key("l"), sym("x")}, kv{key("l", "b", "c"), file}), OpenOptions{}, ErrInvalidIndex, `path "l": is a symlink and also a directory`},
		{"root file beside others", rawIndex(nil, kv{key(), file}, kv{key("a"), file}), OpenOptions{}, ErrInvalidIndex, "single-file tree"},
		{"unknown type", rawIndex(nil, kv{key("a"), enc(t, []any{3, cbor.RawMessage(capb)})}), OpenOptions{}, ErrInvalidIndex, `path "a": unknown entry type 3`},
		{"negative type", rawIndex(nil, kv{key("a"), enc(t, []any{-1, cbor.RawMessage(capb)})}), OpenOptions{}, ErrInvalidIndex, `path "a": entry is not [type, content]`},
		{"entry of three", rawIndex(nil, kv{key("a"), enc(t, []any{0, cbor.RawMessage(capb), 1})}), OpenOptions{}, ErrInvalidIndex, `path "a": entry is not`},
		{"entry of one", rawIndex(nil, kv{key("a"), enc(t, []any{0})}), OpenOptions{}, ErrInvalidIndex, `path "a": entry is not`},
		{"entry not an array", rawIndex(nil, kv{key("a"), enc(t, 0)}), OpenOptions{}, ErrInvalidIndex, `path "a": entry is not`},
		{"capability too short", rawIndex(nil, kv{key("a"), enc(t, []any{0, cbor.Tag{Number: 276, Content: bin[:65]}})}), OpenOptions{}, ErrInvalidIndex, `path "a": read capability`},
		{"capability other tag", rawIndex(nil, kv{key("a"), enc(t, []any{0, cbor.Tag{Number: 277, Content: bin}})}), OpenOptions{}, ErrInvalidIndex, `path "a": read capability`},
		{"capability untagged", rawIndex(nil, kv{key("a"), enc(t, []any{0, bin})}), OpenOptions{}, ErrInvalidIndex, `path "a": read capability`},
		{"capability block size", rawIndex(nil, kv{key("a"), enc(t, []any{0, cbor.Tag{Number: 276, Content: append([]byte{0x0b}, bin[1:]...)}})}), OpenOptions{}, ErrInvalidIndex, `path "a": read capability`},
		{"file with a text", rawIndex(nil, kv{key("a"), enc(t, []any{0, "x"})}), OpenOptions{}, ErrInvalidIndex, `path "a": read capability`},
		{"symlink with a capability", rawIndex(nil, kv{key("a"), sym(cbor.RawMessage(capb))}), OpenOptions{}, ErrInvalidIndex, `path "a": symlink target is not a text string`},
		{"symlink target bytes", rawIndex(nil, kv{key("a"), sym([]byte("x"))}), OpenOptions{}, ErrInvalidIndex, `path "a": symlink target is not a text string`},
		{"symlink target NUL", rawIndex(nil, kv{key("a"), sym("x\x00y")}), OpenOptions{}, ErrInvalidIndex, `path "a": symlink target contains NUL`},
		{"symlink target empty", rawIndex(nil, kv{key("a"), sym("")}), OpenOptions{}, ErrInvalidIndex, `path "a": empty symlink target`},
		{"symlink target non-UTF-8", rawIndex(nil, kv{key("a"), append([]byte{0x82, 0x02}, badText...)}), OpenOptions{}, ErrInvalidIndex, `path "a": symlink target is not valid UTF-8`},
		{"trailing data", append(valid, 0x00), OpenOptions{}, ErrInvalidIndex, "extraneous data"},
		{"unsorted keys", rawIndex(nil, kv{key("b"), file}, kv{key("a"), file}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"length-first key order", rawIndex(nil, kv{key("a", "a"), file}, kv{key("bbbbbb"), file}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest version", rawIndex([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x18, 0x01}, kv{key("a"), file}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest tag", rawIndex([]byte{0xdb, 0, 0, 0, 0, 0x65, 0x72, 0x69, 0x74, 0x82, 0x01}, kv{key("a"), file}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"extra tag on a key", rawIndex(nil, kv{append([]byte{0xd8, 0x64}, key("a")...), file}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"indefinite-length map", append(append([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x01, 0xbf}, append(key("a"), file...)...), 0xff), OpenOptions{}, ErrInvalidIndex, "indefinite-length"},
		// Each head the fast path of parse reads (canonical.go), not in its
		// shortest form, and lengths it must not trust.
		{"non-shortest map head", append(append([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x01, 0xb8, 0x01}, key("a")...), file...), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest key array", rawIndex(nil, kv{[]byte{0x98, 0x01, 0x61, 'a'}, file}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest target", rawIndex(nil, kv{key("a"), []byte{0x82, 0x02, 0x78, 0x01, 'a'}}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest capability length", rawIndex(nil, kv{key("a"), append([]byte{0x82, 0x00, 0xd9, 0x01, 0x14, 0x59, 0x00, 0x42}, bin...)}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest capability tag", rawIndex(nil, kv{key("a"), append([]byte{0x82, 0x00, 0xda, 0, 0, 0x01, 0x14, 0x58, 0x42}, bin...)}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"non-shortest type", rawIndex(nil, kv{key("a"), append([]byte{0x82, 0x18, 0x00}, capb...)}), OpenOptions{}, ErrInvalidIndex, "not deterministically encoded"},
		{"indefinite-length key", rawIndex(nil, kv{[]byte{0x9f, 0x61, 'a', 0xff}, file}), OpenOptions{}, ErrInvalidIndex, "indefinite-length"},
		{"indefinite-length name", rawIndex(nil, kv{[]byte{0x81, 0x7f, 0x61, 'a', 0xff}, file}), OpenOptions{}, ErrInvalidIndex, "indefinite-length"},
		{"truncated", valid[:len(valid)-1], OpenOptions{}, ErrInvalidIndex, "EOF"},
		{"more pairs than data", append(append([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x01, 0xb9, 0xff, 0xff}, key("a")...), file...), OpenOptions{}, ErrInvalidIndex, "EOF"},
		{"deep path", rawIndex(nil, kv{key("a", "b", "c"), file}), OpenOptions{Limits: Limits{MaxDepth: 2}}, ErrLimit, `path "a/b/c": 3 components, limit 2`},
		{"long name", rawIndex(nil, kv{key("d", "abcdef"), file}), OpenOptions{Limits: Limits{MaxNameLen: 5}}, ErrLimit, `path "d/abcdef": component of 6 bytes`},
		{"long target", rawIndex(nil, kv{key("a"), sym("abcdef")}), OpenOptions{Limits: Limits{MaxTargetLen: 5}}, ErrLimit, `path "a": symlink target of 6 bytes`},
		{"too many entries", rawIndex(nil, kv{key("a"), file}, kv{key("b"), file}), OpenOptions{Limits: Limits{MaxEntries: 2}}, ErrLimit, "more than 2 entries"},
		{"directories count as entries", rawIndex(nil, kv{key("a", "b", "c"), file}), OpenOptions{Limits: Limits{MaxEntries: 3}}, ErrLimit, "more than 3 entries"},
		{"too many map pairs", manyEntries(t, 17, file), OpenOptions{Limits: Limits{MaxEntries: 16}}, ErrLimit, "more than 16 entries"},
		{"index size", valid, OpenOptions{Limits: Limits{MaxIndexSize: int64(len(valid) - 1)}}, ErrLimit, "index of"},
	}
}

func TestHostileIndex(t *testing.T) {
	cases := hostileIndexes(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.data, nil, tc.opts)
			if err == nil {
				t.Fatalf("accepted %x", tc.data)
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("error %q, want one matching %v and mentioning %q", err, tc.err, tc.substr)
			}
		})
	}
}

// manyEntries is an index of n files named by number, keys in canonical order.
func manyEntries(t testing.TB, n int, file []byte) []byte {
	c, err := newCodec(Limits{}, true)
	if err != nil {
		t.Fatal(err)
	}
	items := make([]item, n)
	var rc eris.ReadCapability
	if err := rc.UnmarshalCBOR(file[2:]); err != nil {
		t.Fatal(err)
	}
	for i := range items {
		items[i] = item{path: []string{strings.Repeat("f", i+1)}, kind: Regular, cap: rc}
	}
	b, err := c.marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidIndexes(t *testing.T) {
	rc := testCap(t)
	capb := capBytes(t, rc)
	file := enc(t, []any{0, cbor.RawMessage(capb)})
	cases := []struct {
		name string
		data []byte
		opts OpenOptions
		list string
	}{
		{"empty", rawIndex(nil), OpenOptions{}, "/ directory"},
		{"single file", rawIndex(nil, kv{enc(t, []string{}), file}), OpenOptions{}, "/ regular file"},
		{"single symlink", rawIndex(nil, kv{enc(t, []string{}), enc(t, []any{2, "/gnu/store/x"})}), OpenOptions{}, "/ symlink"},
		{"UTF-8 names", rawIndex(nil, kv{enc(t, []string{"日本", "😀 e\u0301"}), file}), OpenOptions{}, "/ directory,/日本 directory,/日本/😀 e\u0301 regular file"},
		{"non-deterministic, allowed", rawIndex([]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x18, 0x01}, kv{enc(t, []string{"b"}), file}, kv{enc(t, []string{"a"}), file}), OpenOptions{AllowNonDeterministic: true}, "/ directory,/a regular file,/b regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tree, err := parse(tc.data, nil, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var list []string
			for e := range tree.All() {
				list = append(list, "/"+e.Path()+" "+e.Kind().String())
			}
			if got := strings.Join(list, ","); got != tc.list {
				t.Errorf("tree %q, want %q", got, tc.list)
			}
		})
	}
}

// TestVectors checks our golden vectors in testdata/vectors: no
// implementation of ERIS-FS publishes any, so these pin our own output
// (see testdata/vectors/README.md).
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			ctx := t.Context()
			s := v.spec()
			dir := s.writeDir(t)
			store := eristest.NewStore()
			rc, _, err := EncodeDir(ctx, dir, store, EncodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rc.URN() != v.URN {
				t.Errorf("URN %s, want %s", rc.URN(), v.URN)
			}
			tree, err := Open(ctx, rc, store, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			idx, err := readIndex(ctx, tree.Capability(), store, eris.ReaderOptions{}, DefaultMaxIndexSize, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(idx); got != v.IndexHex {
				t.Errorf("index\n got %s\nwant %s", got, v.IndexHex)
			}
			s.check(t, ctx, tree)
		})
	}
}
