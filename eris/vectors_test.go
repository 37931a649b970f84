package eris_test

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/chacha20"

	"erismount/eris"
	"erismount/eris/eristest"
)

// vector is one official test vector (testdata/vectors, from the spec).
type vector struct {
	ID                int               `json:"id"`
	Type              string            `json:"type"`
	Name              string            `json:"name"`
	Content           string            `json:"content"`
	ConvergenceSecret string            `json:"convergence-secret"`
	BlockSize         int               `json:"block-size"`
	URN               string            `json:"urn"`
	Blocks            map[string]string `json:"blocks"`
	ReadCapability    struct {
		BlockSize     int    `json:"block-size"`
		Level         int    `json:"level"`
		RootReference string `json:"root-reference"`
		RootKey       string `json:"root-key"`
	} `json:"read-capability"`
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func loadVectors(t testing.TB, kind string) []vector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "vectors", "eris-test-vector-"+kind+"-*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s vectors: %v", kind, err)
	}
	var vs []vector
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vs = append(vs, v)
	}
	return vs
}

func mustB32(t testing.TB, s string) []byte {
	t.Helper()
	b, err := b32.DecodeString(s)
	if err != nil {
		t.Fatalf("base32 %q: %v", s, err)
	}
	return b
}

// storeOf loads a vector's blocks into a store, checking that each block's
// key in the JSON is its reference.
func storeOf(t testing.TB, v vector) *eristest.Store {
	t.Helper()
	s := eristest.NewStore()
	for refText, blockText := range v.Blocks {
		ref, err := eris.ParseRef(refText)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutBlock(context.Background(), ref, mustB32(t, blockText)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestPositiveVectors(t *testing.T) {
	for _, v := range loadVectors(t, "positive") {
		t.Run(v.Name, func(t *testing.T) {
			ctx := context.Background()
			content := mustB32(t, v.Content)
			var opts eris.EncodeOptions
			opts.BlockSize = v.BlockSize
			copy(opts.Secret[:], mustB32(t, v.ConvergenceSecret))

			// Encode: exact URN and exactly the vector's set of blocks.
			s := eristest.NewStore()
			rc, err := eris.Encode(ctx, bytes.NewReader(content), s, opts)
			if err != nil {
				t.Fatal(err)
			}
			if rc.URN() != v.URN {
				t.Fatalf("URN\n got %s\nwant %s", rc.URN(), v.URN)
			}
			if rc.Level() != v.ReadCapability.Level || rc.Root().String() != v.ReadCapability.RootReference {
				t.Errorf("capability level %d root %s, want %d %s", rc.Level(), rc.Root(), v.ReadCapability.Level, v.ReadCapability.RootReference)
			}
			if s.Len() != len(v.Blocks) {
				t.Errorf("encoder wrote %d distinct blocks, vector has %d", s.Len(), len(v.Blocks))
			}
			for _, ref := range s.Refs() {
				got, _ := s.GetBlock(ctx, ref)
				want, ok := v.Blocks[ref.String()]
				if !ok {
					t.Errorf("block %s not in the vector", ref)
				} else if !bytes.Equal(got, mustB32(t, want)) {
					t.Errorf("block %s differs", ref)
				}
			}

			// URN and binary round trips.
			parsed, err := eris.ParseURN(v.URN)
			if err != nil {
				t.Fatal(err)
			}
			if parsed != rc {
				t.Errorf("ParseURN(URN) = %v, want %v", parsed, rc)
			}

			// Decode from the vector's own blocks.
			r, err := eris.NewReader(ctx, parsed, storeOf(t, v))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content) {
				t.Fatalf("decoded %d bytes, want %d (content differs)", len(got), len(content))
			}
			size, err := r.Size()
			if err != nil || size != int64(len(content)) {
				t.Errorf("Size = %d, %v; want %d", size, err, len(content))
			}
		})
	}
}

func TestNegativeVectors(t *testing.T) {
	for _, v := range loadVectors(t, "negative") {
		t.Run(v.Name, func(t *testing.T) {
			ctx := context.Background()
			rc, err := eris.ParseURN(v.URN)
			if err != nil {
				// A capability rejected at parse time is rejected.
				t.Logf("rejected at parse: %v", err)
				return
			}
			s := storeOf(t, v)
			r, err := eris.NewReader(ctx, rc, s)
			if err != nil {
				t.Logf("rejected: %v", err)
				return
			}
			got, err := io.ReadAll(r)
			if err == nil {
				t.Fatalf("decoded %d bytes without error", len(got))
			}
			// Vectors 13 and 15 lack blocks; every other one is corrupt.
			want := eris.ErrCorrupt
			if v.ID == 13 || v.ID == 15 {
				want = eris.ErrNotFound
			}
			if !errors.Is(err, want) {
				t.Errorf("error %v does not match %v", err, want)
			}
			var be *eris.BlockError
			if !errors.As(err, &be) || be.Ref.IsZero() {
				t.Errorf("error %v does not name a block", err)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

// TestXORBlockEqualsChaCha20: the fast path (plain ChaCha20 for counter 0,
// ChaCha20-Poly1305's keystream after it) gives the bytes of plain ChaCha20
// for every length and level, in place or not.
func TestXORBlockEqualsChaCha20(t *testing.T) {
	src := make([]byte, eris.BlockSize32K)
	for i := range src {
		src[i] = byte(i*131 + 7)
	}
	key := eris.Key{9, 8, 7}
	for _, n := range []int{0, 1, 63, 64, 65, 1000, eris.BlockSize1K, eris.BlockSize32K} {
		for _, level := range []int{0, 1, 5} {
			want := make([]byte, n)
			var nonce [12]byte
			nonce[0] = byte(level)
			c, _ := chacha20.NewUnauthenticatedCipher(key[:], nonce[:])
			c.XORKeyStream(want, src[:n])
			got := make([]byte, n)
			eris.XORBlockForTest(got, src[:n], &key, level)
			if !bytes.Equal(got, want) {
				t.Fatalf("%d bytes at level %d differ", n, level)
			}
			inPlace := append([]byte(nil), src[:n]...)
			eris.XORBlockForTest(inPlace, inPlace, &key, level)
			if !bytes.Equal(inPlace, want) {
				t.Fatalf("%d bytes at level %d in place differ", n, level)
			}
		}
	}
}
