package narsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// blocks is a cache in front of a peer: blocks from the peer are kept
// locally and counted.
type blocks struct {
	local, peer *eristest.Store
	remote      atomic.Int64 // bytes from the peer
	dead        atomic.Bool
}

func (b *blocks) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if blk, err := b.local.GetBlock(ctx, ref); err == nil {
		return blk, nil
	}
	if b.dead.Load() {
		return nil, &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: peer down", eris.ErrNotFound)}
	}
	blk, err := b.peer.GetBlock(ctx, ref)
	if err != nil {
		return nil, err
	}
	b.remote.Add(int64(len(blk)))
	b.local.PutBlock(ctx, ref, blk)
	return blk, nil
}

func (b *blocks) has(ctx context.Context, ref eris.Ref) (bool, error) {
	_, err := b.local.GetBlock(ctx, ref)
	return err == nil, nil
}

// item is a store item published every way: an ERIS-FS tree and an
// ERIS-Nar on a peer, compressed nars on an upstream HTTP server.
type item struct {
	n       *narinfo.Narinfo
	x       Extra
	nar     []byte
	xz      []byte
	b       *blocks
	srv     *httptest.Server
	tamper  atomic.Bool // the upstream serves a nar with one byte changed
	mu      sync.Mutex
	fetches map[string]int
}

func newItem(t *testing.T) *item {
	t.Helper()
	ctx := context.Background()
	// Text compresses well: the xz nar is far smaller than the tree.
	spec := testenv.Spec{"share/doc/README": testenv.File(strings.Repeat("the quick brown fox jumps over the lazy dog\n", 4000))}
	for i := range 20 {
		spec[fmt.Sprintf("lib/f%02d.txt", i)] = testenv.File(strings.Repeat(fmt.Sprintf("line %d of a text file\n", i), 300+i))
	}
	spec["bin/tool"] = testenv.Bytes(testenv.Random(3, 50_000))
	spec["lib/link"] = testenv.Link("f00.txt")
	src := spec.WriteDir(t)
	it := &item{b: &blocks{local: eristest.NewStore(), peer: eristest.NewStore()}, fetches: map[string]int{}}
	rc, _, err := erisfs.EncodeDir(ctx, src, it.b.peer, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	hw := nar.NewHashingWriter(&buf)
	if err := nar.WriteFS(ctx, hw, nar.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	it.nar = buf.Bytes()
	it.xz = compressed(t, it.nar, compress.XZ)
	zst := compressed(t, it.nar, compress.Zstd)
	enc, err := eris.Encode(ctx, bytes.NewReader(zst), it.b.peer, eris.EncodeOptions{BlockSize: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	it.x = Extra{ERISNar: enc, ERISNarCompression: compress.Zstd}
	it.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		it.mu.Lock()
		it.fetches[r.URL.Path]++
		it.mu.Unlock()
		switch r.URL.Path {
		case "/nar/a.nar.xz":
			if it.tamper.Load() {
				bad := bytes.Clone(it.nar)
				bad[len(bad)/2] ^= 1
				w.Write(compressed(t, bad, compress.XZ))
				return
			}
			w.Write(it.xz)
		case "/nar/a.nar.zst":
			w.Write(zst)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(it.srv.Close)
	it.n = &narinfo.Narinfo{
		StorePath: "/nix/store/0q7pcz9hnscl1x29v4nws03i2ii5c8v0-item", NarHash: hw.Sum().Hash, NarSize: hw.Sum().Size, ERIS: rc,
		Locations: []narinfo.Location{
			{URL: it.srv.URL + "/nar/a.nar.xz", Compression: "xz", FileSize: int64(len(it.xz))},
			{URL: it.srv.URL + "/nar/a.nar.zst", Compression: "zstd", FileSize: int64(len(zst))},
		},
	}
	return it
}

func compressed(t testing.TB, b []byte, method string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := compress.NewWriter(&buf, method, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (it *item) chooser(t *testing.T, force Kind) *Chooser {
	return New(Options{Blocks: it.b, Local: it.b.local, Has: it.b.has, Force: force,
		RemoteBytes: it.b.remote.Load, Logger: testenv.Logger(t)})
}

func TestWrite(t *testing.T) {
	ctx := context.Background()
	it := newItem(t)
	t.Logf("nar %d bytes, xz %d, tree blocks on the peer %d", len(it.nar), len(it.xz), it.b.peer.Len())

	check := func(t *testing.T, c *Chooser, x Extra, want Kind) Result {
		t.Helper()
		var out bytes.Buffer
		res, err := c.Write(ctx, &out, it.n, x)
		if err != nil {
			t.Fatalf("Write: %v (%+v)", err, res)
		}
		if !bytes.Equal(out.Bytes(), it.nar) || res.Sent != int64(len(it.nar)) {
			t.Fatalf("the nar written differs (%d bytes, want %d)", out.Len(), len(it.nar))
		}
		if res.Kind != want {
			t.Errorf("source %s, want %s (options %v, attempts %v)", res.Kind, want, res.Options, res.Attempts)
		}
		t.Logf("%s: moved %d bytes, options %v", res.Kind, res.Moved, res.Options)
		return res
	}

	t.Run("nothing-local-takes-the-compressed-nar", func(t *testing.T) {
		res := check(t, it.chooser(t, ""), Extra{}, Upstream)
		if res.Moved != int64(len(it.xz)) || res.URL != it.n.Locations[0].URL {
			t.Errorf("moved %d from %s, want the xz nar's %d", res.Moved, res.URL, len(it.xz))
		}
	})
	for _, k := range Kinds() {
		t.Run("forced-"+string(k), func(t *testing.T) {
			it.b.local = eristest.NewStore()
			res := check(t, it.chooser(t, k), it.x, k)
			if k != Upstream && (res.Moved == 0 || res.Moved != it.b.remote.Load()) {
				t.Errorf("moved %d, the peer sent %d", res.Moved, it.b.remote.Load())
			}
			it.b.remote.Store(0)
		})
	}
	t.Run("tree-local-takes-the-tree", func(t *testing.T) {
		for _, ref := range it.b.peer.Refs() {
			blk, _ := it.b.peer.GetBlock(ctx, ref)
			it.b.local.PutBlock(ctx, ref, blk)
		}
		res := check(t, it.chooser(t, ""), it.x, Tree)
		if res.Moved != 0 || res.Options[0].Cost != 0 {
			t.Errorf("moved %d, cost %d: want nothing over the network", res.Moved, res.Options[0].Cost)
		}
	})
	t.Run("eris-nar-local-takes-it", func(t *testing.T) {
		it.b.local = eristest.NewStore()
		if err := eris.Walk(ctx, it.x.ERISNar, it.b.peer, func(ref eris.Ref, level int) error {
			blk, err := it.b.peer.GetBlock(ctx, ref)
			if err == nil {
				err = it.b.local.PutBlock(ctx, ref, blk)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		res := check(t, it.chooser(t, ""), it.x, ERISNar)
		if res.Moved != 0 {
			t.Errorf("moved %d, want 0", res.Moved)
		}
	})
	t.Run("peer-dead-falls-back-to-the-nar", func(t *testing.T) {
		it.b.local = eristest.NewStore()
		it.b.dead.Store(true)
		defer it.b.dead.Store(false)
		c := New(Options{Blocks: it.b, Local: it.b.local, Has: it.b.has, TreeOverhead: 0.01, Logger: testenv.Logger(t)})
		res := check(t, c, Extra{}, Upstream)
		if len(res.Attempts) != 1 || res.Attempts[0].Option.Kind != Tree {
			t.Errorf("attempts %v, want the tree first", res.Attempts)
		}
	})
	t.Run("bad-location-then-the-next", func(t *testing.T) {
		n := *it.n
		n.Locations = append([]narinfo.Location{{URL: it.srv.URL + "/nar/missing.nar.xz", Compression: "xz", FileSize: 1}}, it.n.Locations...)
		var out bytes.Buffer
		res, err := it.chooser(t, Upstream).Write(ctx, &out, &n, Extra{})
		if err != nil || !bytes.Equal(out.Bytes(), it.nar) || res.URL != it.n.Locations[0].URL {
			t.Fatalf("%v, %+v", err, res)
		}
		if len(res.Attempts) != 1 || !strings.Contains(res.Attempts[0].Err.Error(), "HTTP 404") {
			t.Errorf("attempts %v", res.Attempts)
		}
	})
	t.Run("tampered-nar-cut-short-and-the-retry-takes-another", func(t *testing.T) {
		it.b.local = eristest.NewStore()
		it.tamper.Store(true)
		defer it.tamper.Store(false)
		c := it.chooser(t, "")
		var out bytes.Buffer
		res, err := c.Write(ctx, &out, it.n, Extra{})
		if !errors.Is(err, narinfo.ErrMismatch) || res.Kind != Upstream {
			t.Fatalf("got %v from %s, want a mismatch from upstream", err, res.Kind)
		}
		if res.Sent == 0 || res.Sent >= it.n.NarSize || int64(out.Len()) != res.Sent {
			t.Errorf("sent %d of %d bytes: want a nar cut short", res.Sent, it.n.NarSize)
		}
		check(t, c, Extra{}, Tree)
	})
	t.Run("held-bytes-reset-and-the-next-source", func(t *testing.T) {
		it.b.local = eristest.NewStore()
		it.tamper.Store(true)
		defer it.tamper.Store(false)
		var out holding
		res, err := it.chooser(t, "").Write(ctx, &out, it.n, Extra{})
		// The next source is the zstd nar, which is right.
		if err != nil || res.URL != it.n.Locations[1].URL || !bytes.Equal(out.Bytes(), it.nar) {
			t.Fatalf("%v from %s (attempts %v)", err, res.Kind, res.Attempts)
		}
		if len(res.Attempts) != 1 || !errors.Is(res.Attempts[0].Err, narinfo.ErrMismatch) {
			t.Errorf("attempts %v, want the upstream's mismatch", res.Attempts)
		}
	})
	t.Run("nothing-can-start", func(t *testing.T) {
		n := *it.n
		n.ERIS = eris.ReadCapability{}
		n.Locations = []narinfo.Location{{URL: it.srv.URL + "/nar/missing", Compression: "none"}}
		var out bytes.Buffer
		res, err := it.chooser(t, "").Write(ctx, &out, &n, Extra{})
		var nse *NoSourceError
		if !errors.As(err, &nse) || res.Sent != 0 || out.Len() != 0 || nse.Timeout() {
			t.Fatalf("got %v, sent %d", err, res.Sent)
		}
		t.Log(err)
		if _, err := it.chooser(t, "").Write(ctx, &out, &narinfo.Narinfo{StorePath: n.StorePath, NarSize: 1}, Extra{}); !errors.Is(err, ErrNoSource) {
			t.Errorf("no source at all: %v", err)
		}
	})
	t.Run("file-location", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "a.nar.xz"), it.xz, 0o644); err != nil {
			t.Fatal(err)
		}
		n := *it.n
		n.ERIS = eris.ReadCapability{}
		n.Locations = []narinfo.Location{{URL: "file://" + dir + "/a.nar.xz", Compression: "xz"}}
		var out bytes.Buffer
		if _, err := it.chooser(t, "").Write(ctx, &out, &n, Extra{}); err != nil || !bytes.Equal(out.Bytes(), it.nar) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("unstated-compression", func(t *testing.T) {
		n := *it.n
		n.ERIS = eris.ReadCapability{}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "plain"), it.nar, 0o644)
		os.WriteFile(filepath.Join(dir, "bz"), bzip2(t, it.nar), 0o644)
		for _, f := range []string{"plain", "bz"} {
			n.Locations = []narinfo.Location{{URL: "file://" + dir + "/" + f}}
			var out bytes.Buffer
			if _, err := it.chooser(t, "").Write(ctx, &out, &n, Extra{}); err != nil || !bytes.Equal(out.Bytes(), it.nar) {
				t.Errorf("%s: %v", f, err)
			}
		}
	})
}

// holding is a Resetter that never sends anything on.
type holding struct{ bytes.Buffer }

func (h *holding) Reset() bool { h.Buffer.Reset(); return true }

// bzip2 compresses with the bzip2 tool (Go has no bzip2 writer).
func bzip2(t *testing.T, b []byte) []byte {
	t.Helper()
	cmd := exec.Command("bzip2", "-c")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("bzip2: %v", err)
	}
	return out
}

func TestNoSourceTimeout(t *testing.T) {
	e := &NoSourceError{Attempts: []Attempt{{Err: context.DeadlineExceeded}, {Err: fmt.Errorf("get: %w", context.DeadlineExceeded)}}}
	if !e.Timeout() {
		t.Errorf("all timed out, Timeout() false")
	}
	e.Attempts = append(e.Attempts, Attempt{Err: errors.New("HTTP 404")})
	if e.Timeout() {
		t.Errorf("a 404 among them, Timeout() true")
	}
}
