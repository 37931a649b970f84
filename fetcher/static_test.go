package fetcher

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"erismount/eris"
)

// TestStaticLayout: an http peer with ?layout=static GETs <prefix>/<REF>
// from a plain file server (Go's http.FileServer over a directory of
// blocks named by reference), verifies what it gets — a file whose bytes
// are not its name's block is ErrCorrupt — and a missing file is
// ErrNotFound.
func TestStaticLayout(t *testing.T) {
	blocks := append(randomBlocks(t, 3, eris.BlockSize1K), randomBlocks(t, 2, eris.BlockSize32K)...)
	dir := t.TempDir()
	sub := filepath.Join(dir, "cache", "blocks")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	var refs []eris.Ref
	for _, b := range blocks {
		ref := eris.RefOf(b)
		refs = append(refs, ref)
		if err := os.WriteFile(filepath.Join(sub, ref.String()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A file named after one block holding another.
	liar := eris.RefOf([]byte("the block this name promises"))
	if err := os.WriteFile(filepath.Join(sub, liar.String()), blocks[0], 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.RequestURI())
		mu.Unlock()
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	p := dial(t, srv.URL+"/cache/blocks/?layout=static", ClientOptions{MaxInFlight: 1})
	if want := srv.URL + "/cache/blocks?layout=static"; p.URL() != want {
		t.Errorf("URL() = %q, want %q", p.URL(), want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, ref := range refs {
		got, err := p.GetBlock(ctx, ref)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if !bytes.Equal(got, blocks[i]) {
			t.Fatalf("block %d differs", i)
		}
	}
	mu.Lock()
	first := paths[0]
	mu.Unlock()
	if first != "/cache/blocks/"+refs[0].String() {
		t.Errorf("GET %s, want /cache/blocks/<REF>", first)
	}
	if _, err := p.GetBlock(ctx, liar); !errors.Is(err, eris.ErrCorrupt) {
		t.Errorf("a file that is not its block: %v, want ErrCorrupt", err)
	}
	if _, err := p.GetBlock(ctx, eris.RefOf([]byte("absent"))); !errors.Is(err, eris.ErrNotFound) {
		t.Errorf("a missing file: %v, want ErrNotFound", err)
	}
}
