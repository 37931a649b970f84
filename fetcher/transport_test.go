package fetcher

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"erismount/eris"
)

func TestTransportsGet(t *testing.T) {
	small := randomBlocks(t, 3, eris.BlockSize1K)
	big := randomBlocks(t, 3, eris.BlockSize32K)
	store, refs := storeWith(t, append(small, big...)...)
	blocks := append(small, big...)
	missing := eris.RefOf([]byte("not stored"))
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			_, urls := serve(t, store, ServerOptions{}, tr.listen)
			p := dial(t, urls[0], ClientOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i, ref := range refs {
				got, err := p.GetBlock(ctx, ref)
				if err != nil {
					t.Fatalf("block %d (%d bytes): %v", i, len(blocks[i]), err)
				}
				if !bytes.Equal(got, blocks[i]) {
					t.Fatalf("block %d: got %d bytes that differ from the %d stored", i, len(got), len(blocks[i]))
				}
			}
			_, err := p.GetBlock(ctx, missing)
			if !errors.Is(err, eris.ErrNotFound) {
				t.Fatalf("missing block: got %v, want ErrNotFound", err)
			}
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Peer != p.URL() || !strings.Contains(err.Error(), p.URL()) {
				t.Fatalf("missing block: error %q does not name peer %s", err, p.URL())
			}
		})
	}
}

func TestTransportsPut(t *testing.T) {
	good := append(randomBlocks(t, 2, eris.BlockSize1K), randomBlocks(t, 2, eris.BlockSize32K)...)
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			store, _ := storeWith(t)
			_, urls := serve(t, store, ServerOptions{AllowPut: true}, tr.listen)
			p := dial(t, urls[0], ClientOptions{})
			ctx := context.Background()
			for i, b := range good {
				ref := eris.RefOf(b)
				if err := p.PutBlock(ctx, ref, b); err != nil {
					t.Fatalf("put block %d (%d bytes): %v", i, len(b), err)
				}
				got, err := store.GetBlock(ctx, ref)
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("block %d not stored as sent: %v", i, err)
				}
			}
			before := store.Puts()
			bad := []struct {
				name  string
				ref   eris.Ref
				block []byte
				want  string
			}{
				{"wrong ref", eris.RefOf(good[1]), good[0], "does not match"},
				{"wrong ref 32K", eris.RefOf(good[0]), good[2], "does not match"},
				{"odd size", eris.RefOf(good[0][:1000]), good[0][:1000], "1024 or 32768"},
				{"too large", eris.RefOf(append(good[2], good[0]...)), append(append([]byte(nil), good[2]...), good[0]...), "at most 32768"},
			}
			for _, c := range bad {
				err := p.PutBlock(ctx, c.ref, c.block)
				t.Logf("%s: %v", c.name, err)
				var se *StatusError
				if !errors.As(err, &se) {
					t.Fatalf("%s: got %v, want a refusal", c.name, err)
				}
				if !strings.Contains(err.Error(), c.want) && c.name != "too large" {
					t.Errorf("%s: refusal %q does not say %q", c.name, err, c.want)
				}
			}
			if store.Puts() != before {
				t.Fatalf("refused uploads reached the store: %d puts", store.Puts()-before)
			}
		})
	}
}

func TestPutReadOnly(t *testing.T) {
	b := randomBlocks(t, 1, eris.BlockSize1K)[0]
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			store, _ := storeWith(t)
			_, urls := serve(t, store, ServerOptions{}, tr.listen)
			p := dial(t, urls[0], ClientOptions{})
			err := p.PutBlock(context.Background(), eris.RefOf(b), b)
			var se *StatusError
			if !errors.As(err, &se) || !(strings.HasPrefix(se.Code, "4.05") || strings.HasPrefix(se.Code, "405")) {
				t.Fatalf("put to read-only store: got %v, want 4.05 / 405", err)
			}
			if store.Len() != 0 {
				t.Fatal("read-only store was written")
			}
		})
	}
}
