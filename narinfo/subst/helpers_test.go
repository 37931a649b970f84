package subst

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// upstream is a publisher: a key, a block store and a narinfo directory.
type upstream struct {
	key   *narinfo.PrivateKey
	nix   narinfo.NixPrivateKey
	store *eristest.Store
	dir   string
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	key, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	nix, err := narinfo.GenerateNixKey("upstream-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return &upstream{key: key, nix: nix, store: eristest.NewStore(), dir: t.TempDir()}
}

// published is a store item an upstream published.
type published struct {
	info *narinfo.Narinfo // as parsed from the published narinfo
	src  string           // the tree on disk
	nar  []byte
}

// hashes makes distinct store path hash parts: 32 nix-base32 characters.
func hashPart(i int) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	b := []byte("0q7pcz9hnscl1x29v4nws03i2ii5c8v0")
	for k := 0; k < 4; k++ {
		b[31-k] = alphabet[(i>>(5*k))&31]
	}
	return string(b)
}

// publish encodes the tree at src, computes its nar, and writes an
// ERISv4 narinfo for storePath signed by the upstream's Guix and Nix keys
// (edit, if set, changes the narinfo before signing).
func (u *upstream) publish(t testing.TB, storePath, src string, edit func(n *narinfo.Narinfo)) published {
	t.Helper()
	ctx := context.Background()
	rc, _, err := erisfs.EncodeDir(ctx, src, u.store, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var buf writerBuffer
	hw := nar.NewHashingWriter(&buf)
	if err := nar.WriteFS(ctx, hw, nar.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(storePath)
	n := &narinfo.Narinfo{
		StorePath: storePath, NarHash: hw.Sum().Hash, NarSize: hw.Sum().Size, ERIS: rc,
		References: []string{base},
		Locations:  []narinfo.Location{{URL: "nar/" + base, Compression: "none", FileSize: hw.Sum().Size}},
	}
	if edit != nil {
		edit(n)
	}
	if err := n.SignNix(u.nix); err != nil {
		t.Fatal(err)
	}
	raw, err := n.Sign(narinfo.ERISv4, u.key, "upstream")
	if err != nil {
		t.Fatal(err)
	}
	u.write(t, base[:32], raw)
	parsed, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return published{info: parsed, src: src, nar: buf.b}
}

// write puts a narinfo file into the directory.
func (u *upstream) write(t testing.TB, hashPart string, raw []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(u.dir, hashPart+".narinfo"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

type writerBuffer struct{ b []byte }

func (w *writerBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// serve runs a server of u's narinfos over g on 127.0.0.1 until the test
// ends, and returns its URL.
func serve(t testing.TB, u *upstream, g eris.BlockGetter, opts Options) (string, *Server) {
	t.Helper()
	url, srv, stop := start(t, u, g, opts)
	t.Cleanup(stop)
	return url, srv
}

// start runs a server of u's narinfos over g on 127.0.0.1 until stop,
// which checks that Serve returns nil soon after its context ends.
func start(t testing.TB, u *upstream, g eris.BlockGetter, opts Options) (url string, srv *Server, stop func()) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testenv.Logger(t)
	}
	srv, err := New(Dir(u.dir), g, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), srv, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after its context ended")
		}
	}
}

// response is what a client got.
type response struct {
	status  int
	header  http.Header
	body    []byte
	readErr error // from reading the body: an aborted response
}

func get(t testing.TB, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A transport of its own: no connection is reused after an abort.
	client := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: body, readErr: rerr}
}

// aborted reports whether a read error is a response cut short.
func aborted(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// openTree opens the ERIS-FS tree rc from g.
func openTree(t testing.TB, rc eris.ReadCapability, g eris.BlockGetter) *erisfs.Tree {
	t.Helper()
	tree, err := erisfs.Open(context.Background(), rc, g, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}
