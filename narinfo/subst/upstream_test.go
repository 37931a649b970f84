package subst

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/narsource"
	"erismount/narinfo/source"
	"erismount/tests/testenv"
)

// staticUpstream is a binary cache on disk, as `nix copy --to file://`
// writes one (narinfos at the top, compressed nars under nar/), served by
// Go's file server.
type staticUpstream struct {
	*upstream
	url string
}

func newStaticUpstream(t *testing.T) *staticUpstream {
	t.Helper()
	u := &staticUpstream{upstream: newUpstream(t)}
	os.WriteFile(filepath.Join(u.dir, "nix-cache-info"), []byte("StoreDir: /gnu/store\n"), 0o644)
	os.MkdirAll(filepath.Join(u.dir, "nar"), 0o755)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir(u.dir))}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	u.url = "http://" + ln.Addr().String()
	return u
}

// publishNar writes the compressed nar of src and a narinfo without ERIS
// pointing at it (nar is what is stored; nil stores the right one).
func (u *staticUpstream) publishNar(t *testing.T, storePath, src, method string, tamper bool) published {
	t.Helper()
	p := u.publish(t, storePath, src, nil) // the right NarHash, NarSize
	stored := p.nar
	if tamper {
		stored = bytes.Clone(p.nar)
		stored[len(stored)/2] ^= 1
	}
	var buf bytes.Buffer
	w, err := compress.NewWriter(&buf, method, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(stored)
	w.Close()
	name := "nar/" + filepath.Base(storePath)[:32] + ".nar" + compress.Ext(method)
	if err := os.WriteFile(filepath.Join(u.dir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	n := p.info
	info := &narinfo.Narinfo{StorePath: n.StorePath, NarHash: n.NarHash, NarSize: n.NarSize, References: n.References,
		Locations: []narinfo.Location{{URL: name, Compression: method, FileSize: int64(buf.Len())}}}
	raw, err := info.Sign(narinfo.Classic, u.key, "upstream")
	if err != nil {
		t.Fatal(err)
	}
	u.write(t, filepath.Base(storePath)[:32], raw)
	parsed, _ := narinfo.Parse(raw)
	return published{info: parsed, src: src, nar: p.nar}
}

func serveUpstream(t *testing.T, u *staticUpstream, opts Options) (string, *Server) {
	t.Helper()
	look, err := source.NewHTTP(u.url, source.Options{Trust: Trust{ACL: narinfo.NewACL(u.key.Public())}})
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = testenv.Logger(t)
	srv, err := NewServer(look, narsource.New(narsource.Options{Blocks: u.store, Logger: opts.Logger}), opts)
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
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return")
		}
	})
	return "http://" + ln.Addr().String(), srv
}

// TestUpstreamProxy: narinfos without ERIS from an upstream binary cache
// are served re-signed, and their nars come from the upstream, decompressed
// and checked.
func TestUpstreamProxy(t *testing.T) {
	u := newStaticUpstream(t)
	src := specTree(t)
	own, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	var items []published
	for i, m := range []string{compress.XZ, compress.Zstd, compress.Gzip, compress.None} {
		items = append(items, u.publishNar(t, "/gnu/store/"+hashPart(20+i)+"-item-"+m, src, m, false))
	}
	tampered := u.publishNar(t, "/gnu/store/"+hashPart(30)+"-tampered", src, compress.XZ, true)
	bigTampered := u.publishNar(t, "/gnu/store/"+hashPart(33)+"-big-tampered", testenv.Sample().WriteDir(t), compress.Zstd, true)
	gone := u.publishNar(t, "/gnu/store/"+hashPart(31)+"-gone", src, compress.XZ, false)
	os.Remove(filepath.Join(u.dir, "nar", hashPart(31)+".nar.xz"))
	stranger := newUpstream(t)
	stranger.dir = u.dir
	stranger.publish(t, "/gnu/store/"+hashPart(32)+"-stranger", src, nil)

	url, srv := serveUpstream(t, u, Options{Key: own, Host: "loopback"})
	acl := narinfo.NewACL(own.Public())
	for _, it := range items {
		r := get(t, "GET", url+"/"+it.info.BaseName()[:32]+".narinfo")
		if r.status != 200 {
			t.Fatalf("%s: narinfo status %d", it.info.StorePath, r.status)
		}
		n, err := narinfo.Parse(r.body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Verify(acl); err != nil || !n.Equivalent(it.info) || n.Locations[0].URL != "nar/"+it.info.BaseName() {
			t.Errorf("served narinfo %s: %v\n%s", it.info.StorePath, err, r.body)
		}
		r = get(t, "GET", url+"/nar/"+it.info.BaseName())
		if r.status != 200 || r.readErr != nil || !bytes.Equal(r.body, it.nar) {
			t.Errorf("%s: nar status %d, %v, %d bytes (want %d)", it.info.StorePath, r.status, r.readErr, len(r.body), len(it.nar))
		}
	}
	st := srv.Stats()
	up := st.Sources[narsource.Upstream]
	if st.Nars != int64(len(items)) || up.Nars != int64(len(items)) || up.Moved == 0 || up.Sent != int64(len(items))*int64(len(items[0].nar)) {
		t.Errorf("stats %+v", st)
	}

	// A small nar is held whole before the response starts: a mismatch
	// is an error status, not a connection closed early.
	r := get(t, "GET", url+"/nar/"+tampered.info.BaseName())
	if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), "hash mismatch") {
		t.Errorf("tampered nar: status %d, %q: want 502 naming the mismatch", r.status, r.body)
	}
	r = get(t, "GET", url+"/nar/"+bigTampered.info.BaseName())
	if r.status != 200 || !aborted(r.readErr) || int64(len(r.body)) >= bigTampered.info.NarSize {
		t.Errorf("large tampered nar: status %d, %v, %d of %d bytes: want a response cut short", r.status, r.readErr, len(r.body), bigTampered.info.NarSize)
	}
	r = get(t, "GET", url+"/nar/"+gone.info.BaseName())
	if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), "HTTP 404") || strings.Count(string(r.body), "\n") != 1 {
		t.Errorf("nar gone upstream: status %d, body %q: want 502 and one line", r.status, r.body)
	}
	r = get(t, "GET", url+"/"+hashPart(32)+".narinfo")
	if r.status != 404 {
		t.Errorf("narinfo by an untrusted key: status %d", r.status)
	}
	st = srv.Stats()
	if st.NarsAborted != 1 || st.NarsFailed != 2 || st.Rejected != 1 || st.Sources[narsource.Upstream].Aborted != 1 || st.Sources[narsource.Upstream].Failed != 2 {
		t.Errorf("stats %+v", st)
	}
}
