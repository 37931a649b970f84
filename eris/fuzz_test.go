package eris_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"erismount/eris"
)

func FuzzParseURN(f *testing.F) {
	f.Add(goodURN)
	f.Add("urn:eris:")
	f.Add("urn:erisx2:AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		rc, err := eris.ParseURN(s)
		if err != nil {
			return
		}
		// Whatever parses must print back to an equal capability.
		back, err := eris.ParseURN(rc.URN())
		if err != nil || back != rc {
			t.Fatalf("URN round trip of %q: %v", s, err)
		}
	})
}

func FuzzUnmarshalCapability(f *testing.F) {
	rc, _ := eris.ParseURN(goodURN)
	bin, _ := rc.MarshalBinary()
	enc, _ := cbor.Marshal(rc)
	f.Add(bin)
	f.Add(enc)
	f.Add([]byte{0x0f, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c eris.ReadCapability
		if err := c.UnmarshalBinary(b); err == nil {
			out, _ := c.MarshalBinary()
			if !bytes.Equal(out, b) {
				t.Fatalf("binary round trip changed %x to %x", b, out)
			}
		}
		var d eris.ReadCapability
		if err := cbor.Unmarshal(b, &d); err == nil && d.IsZero() {
			// cbor leaves the value alone on null/undefined; fine.
			return
		}
	})
}

// FuzzDecode decodes from a getter that answers with arbitrary bytes: the
// reader must never panic and never return bytes that are not the content
// of the verified tree (here: the getter's answers can only verify if they
// are the real blocks, so any successful read must equal the content).
func FuzzDecode(f *testing.F) {
	content := bytes.Repeat([]byte("erismount fuzz "), 200) // 3000 bytes, level 1 at 1 KiB
	store := map[eris.Ref][]byte{}
	rc, err := eris.Encode(context.Background(), bytes.NewReader(content), putFunc(func(ref eris.Ref, b []byte) {
		store[ref] = append([]byte(nil), b...)
	}), eris.EncodeOptions{BlockSize: eris.BlockSize1K})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{}, uint8(0), int64(0), uint16(10))
	f.Add(make([]byte, 1024), uint8(1), int64(1000), uint16(2000))
	f.Add([]byte("not a block"), uint8(2), int64(2999), uint16(1))
	refs := make([]eris.Ref, 0, len(store))
	for ref := range store {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, b eris.Ref) int { return bytes.Compare(a[:], b[:]) })
	f.Fuzz(func(t *testing.T, junk []byte, which uint8, off int64, n uint16) {
		// The block at index which (if any) is answered with junk.
		g := getFunc(func(ref eris.Ref) ([]byte, error) {
			if int(which) < len(refs) && ref == refs[which] {
				return append([]byte(nil), junk...), nil
			}
			b, ok := store[ref]
			if !ok {
				return nil, eris.NotFound(ref)
			}
			return append([]byte(nil), b...), nil
		})
		r, err := eris.NewReader(context.Background(), rc, g)
		if err != nil {
			t.Fatal(err)
		}
		if off < 0 {
			off = -off
		}
		buf := make([]byte, n)
		got, err := r.ReadAt(buf, off%4000)
		if err != nil && err != io.EOF {
			if !errors.Is(err, eris.ErrCorrupt) && !errors.Is(err, eris.ErrNotFound) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		o := off % 4000
		if o < int64(len(content)) && !bytes.Equal(buf[:got], content[o:o+int64(got)]) {
			t.Fatalf("returned bytes that are not the content")
		}
	})
}

type putFunc func(eris.Ref, []byte)

func (p putFunc) PutBlock(_ context.Context, ref eris.Ref, b []byte) error { p(ref, b); return nil }

type getFunc func(eris.Ref) ([]byte, error)

func (g getFunc) GetBlock(_ context.Context, ref eris.Ref) ([]byte, error) { return g(ref) }
