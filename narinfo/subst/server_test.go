package subst

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"erismount/eris"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
	"erismount/narinfo/narsource"
	"erismount/tests/testenv"
)

// specTree is the spec's `tree` (§2.3) on disk.
func specTree(t testing.TB) string {
	return nartest.Build(t, filepath.Join(t.TempDir(), "tree"), nartest.Tree())
}

func TestNew(t *testing.T) {
	u := newUpstream(t)
	if _, err := New(Dir(u.dir), u.store, Options{}); !errors.Is(err, ErrNoTrust) {
		t.Errorf("no trust: err %v, want ErrNoTrust", err)
	}
	if _, err := New(Dir(u.dir), u.store, Options{StoreDir: "relative/store", Trust: Trust{Any: true}}); err == nil {
		t.Errorf("relative store directory accepted")
	}
}

// TestRoutes checks the route table of spec §5: status, content type,
// Content-Length, Cache-Control and body, for GET and HEAD, and 404 for
// everything else.
func TestRoutes(t *testing.T) {
	u := newUpstream(t)
	it := u.publish(t, "/gnu/store/"+hashPart(1)+"-tree-1.0", specTree(t), nil)
	base := it.info.BaseName()
	own, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := serve(t, u, u.store, Options{Key: own, Host: "loopback", Trust: Trust{ACL: narinfo.NewACL(u.key.Public())},
		TTL: 36 * time.Hour, NegativeTTL: 10 * time.Minute})
	pub, _ := own.Public().MarshalText()
	missing := hashPart(2)

	cases := []struct {
		method, path string
		status       int
		ctype        string
		cache        string
		body         string // exact when set
		contains     string
		length       int64 // Content-Length when > 0
	}{
		{"GET", "/", 200, "text/html;charset=utf-8", "", "", "signing-key.pub", 0},
		{"GET", "/index.html", 200, "text/html;charset=utf-8", "", "", "erismount substitute server", 0},
		{"GET", "/nix-cache-info", 200, "text/plain", "", "StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n", "", 0},
		{"GET", "/signing-key.pub", 200, "text/plain;charset=utf-8", "", string(pub), "", 0},
		{"GET", "/" + hashPart(1) + ".narinfo", 200, "application/x-nix-narinfo; charset=UTF-8", "max-age=129600", "", "StorePath: /gnu/store/" + base + "\n", 0},
		{"HEAD", "/" + hashPart(1) + ".narinfo", 200, "application/x-nix-narinfo; charset=UTF-8", "max-age=129600", "", "", 0},
		{"GET", "/" + missing + ".narinfo", 404, "text/plain;charset=utf-8", "max-age=600", "Resource not found: /" + missing + ".narinfo\n", "", 0},
		{"HEAD", "/" + missing + ".narinfo", 404, "text/plain;charset=utf-8", "max-age=600", "", "", 0},
		{"GET", "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo", 404, "text/plain;charset=utf-8", "max-age=600", "", "", 0},
		{"GET", "/short.narinfo", 404, "text/plain;charset=utf-8", "max-age=600", "", "", 0},
		{"GET", "/nar/" + base, 200, "application/x-nix-archive; charset=ISO-8859-1", "", string(it.nar), "", it.info.NarSize},
		{"HEAD", "/nar/" + base, 200, "application/x-nix-archive; charset=ISO-8859-1", "", "", "", it.info.NarSize},
		{"GET", "/nar/gzip/" + base, 404, "text/plain;charset=utf-8", "", "", "Resource not found", 0},
		{"GET", "/nar/none/" + base, 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"GET", "/nar/" + hashPart(1) + "-other-name", 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"GET", "/nar/" + missing + "-tree-1.0", 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"GET", "/nar/..", 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"GET", "/log/" + base, 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"GET", "/file/x/sha256/" + it.info.NarHash.Nix32(), 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"GET", "/sub/" + hashPart(1) + ".narinfo", 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"POST", "/" + hashPart(1) + ".narinfo", 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"PUT", "/nar/" + base, 404, "text/plain;charset=utf-8", "", "", "", 0},
		{"DELETE", "/", 404, "text/plain;charset=utf-8", "", "", "", 0},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := get(t, c.method, url+c.path)
			if r.status != c.status {
				t.Fatalf("status %d, want %d (body %q)", r.status, c.status, r.body)
			}
			if got := r.header.Get("Content-Type"); got != c.ctype {
				t.Errorf("Content-Type %q, want %q", got, c.ctype)
			}
			if got := r.header.Get("Cache-Control"); got != c.cache {
				t.Errorf("Cache-Control %q, want %q", got, c.cache)
			}
			if r.readErr != nil {
				t.Errorf("body: %v", r.readErr)
			}
			if c.method == "HEAD" && len(r.body) != 0 {
				t.Errorf("HEAD answered with a body")
			}
			if c.body != "" && string(r.body) != c.body {
				t.Errorf("body %q, want %q", r.body, c.body)
			}
			if !bytes.Contains(r.body, []byte(c.contains)) {
				t.Errorf("body %q does not contain %q", r.body, c.contains)
			}
			if cl := r.header.Get("Content-Length"); c.method == "GET" && cl != fmt.Sprint(len(r.body)) {
				t.Errorf("Content-Length %q for a body of %d bytes", cl, len(r.body))
			}
			if c.length > 0 && r.header.Get("Content-Length") != fmt.Sprint(c.length) {
				t.Errorf("Content-Length %q, want NarSize %d", r.header.Get("Content-Length"), c.length)
			}
		})
	}
}

// TestNarinfoModes: what is served in each signing mode is the upstream
// narinfo with only the location changed — equivalent in Guix's sense —
// signed by the server's key (verifiable under an ACL holding only that
// key), by its Nix key, or not at all.
func TestNarinfoModes(t *testing.T) {
	u := newUpstream(t)
	it := u.publish(t, "/gnu/store/"+hashPart(3)+"-tree-1.0", specTree(t), func(n *narinfo.Narinfo) {
		n.Deriver = hashPart(4) + "-tree-1.0.drv"
		n.References = []string{hashPart(5) + "-dep-2", hashPart(3) + "-tree-1.0"}
	})
	own, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ownNix, err := narinfo.GenerateNixKey("loopback-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	upstreamACL := narinfo.NewACL(u.key.Public())
	cases := []struct {
		name    string
		opts    Options
		outcome narinfo.Outcome // under an ACL of the server's own key
		nix     bool            // a valid Sig by the server's Nix key
	}{
		{"guix-key", Options{Key: own, Trust: Trust{ACL: upstreamACL}}, narinfo.Valid, false},
		{"nix-key", Options{NixKey: &ownNix, Trust: Trust{NixKeys: []narinfo.NixPublicKey{u.nix.Public()}}}, narinfo.Unsigned, true},
		{"both", Options{Key: own, NixKey: &ownNix, Trust: Trust{ACL: upstreamACL}}, narinfo.Valid, true},
		{"unsigned", Options{Trust: Trust{ACL: upstreamACL}}, narinfo.Unsigned, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url, _ := serve(t, u, u.store, c.opts)
			r := get(t, "GET", url+"/"+hashPart(3)+".narinfo")
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			n, err := narinfo.Parse(r.body)
			if err != nil {
				t.Fatalf("served narinfo does not parse: %v\n%s", err, r.body)
			}
			if !n.Equivalent(it.info) {
				t.Errorf("served narinfo is not equivalent to the upstream one:\n%s", r.body)
			}
			if n.Deriver != it.info.Deriver || n.ERIS != it.info.ERIS {
				t.Errorf("Deriver %q ERIS %v, upstream %q %v", n.Deriver, n.ERIS, it.info.Deriver, it.info.ERIS)
			}
			want := []narinfo.Location{{URL: "nar/" + it.info.BaseName(), Compression: "none", FileSize: it.info.NarSize}}
			if fmt.Sprint(n.Locations) != fmt.Sprint(want) {
				t.Errorf("locations %v, want %v", n.Locations, want)
			}
			outcome, _ := n.Verify(narinfo.NewACL(own.Public()))
			if outcome != c.outcome {
				t.Errorf("Guix verdict under the server's key: %v, want %v", outcome, c.outcome)
			}
			if outcome, _ := n.Verify(upstreamACL); outcome == narinfo.Valid {
				t.Errorf("the served narinfo verifies under the upstream key: not re-signed")
			}
			_, err = n.VerifyNix([]narinfo.NixPublicKey{ownNix.Public()})
			if (err == nil) != c.nix {
				t.Errorf("Nix Sig by the server's key: %v, want valid=%v", err, c.nix)
			}
			// Guix's rule: the first narinfo in server order equivalent
			// to the authorized one wins, signed or not (spec §1.7).
			if outcome, _ := it.info.Verify(upstreamACL); outcome != narinfo.Valid || !n.Equivalent(it.info) {
				t.Errorf("the upstream narinfo would not vouch for the served one")
			}
		})
	}
}

// TestNarMatchesNixStore: the nar served is nix-store --dump of the tree,
// with the signed NarHash, for a tree with files of every size around the
// ERIS boundaries.
func TestNarMatchesNixStore(t *testing.T) {
	u := newUpstream(t)
	src := testenv.Sample().WriteDir(t)
	it := u.publish(t, "/gnu/store/"+hashPart(6)+"-sample", src, nil)
	url, srv := serve(t, u, u.store, Options{Trust: Trust{Any: true}})
	r := get(t, "GET", url+"/nar/"+it.info.BaseName())
	if r.status != 200 || r.readErr != nil {
		t.Fatalf("status %d, read error %v", r.status, r.readErr)
	}
	if !bytes.Equal(r.body, nartest.NixDump(t, src)) {
		t.Fatalf("served nar (%d bytes) differs from nix-store --dump", len(r.body))
	}
	if got := (nar.Sum{Hash: sha(r.body), Size: int64(len(r.body))}); got != it.info.Sum() {
		t.Errorf("served nar %v, narinfo says %v", got, it.info.Sum())
	}
	if st := srv.Stats(); st.Nars != 1 || st.NarsAborted != 0 || st.NarBytes != int64(len(r.body)) {
		t.Errorf("stats %+v", st)
	}
}

func sha(b []byte) nar.Hash {
	hw := nar.NewHashingWriter(nil)
	hw.Write(b)
	return hw.Sum().Hash
}

// TestNarAborted: a nar whose blocks are bad, or whose bytes would not
// match the signed NarHash/NarSize, is never sent whole: the response is
// cut short (or refused before it starts when the index is unavailable).
func TestNarAborted(t *testing.T) {
	src := testenv.Sample().Without("data/size-03145745").WriteDir(t)
	other := testenv.Sample().Without("data/size-03145745", "bin/hello").WriteDir(t)
	cases := []struct {
		name   string
		setup  func(t *testing.T, u *upstream) published
		status int // 200: aborted mid-stream
	}{
		{"corrupt-leaf", func(t *testing.T, u *upstream) published {
			it := u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, nil)
			leaf := leafOf(t, u, it, "data/size-01048579")
			u.store.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
				if ref == leaf {
					b[0] ^= 1
				}
				return b, nil
			}
			return it
		}, 200},
		{"missing-leaf", func(t *testing.T, u *upstream) published {
			it := u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, nil)
			u.store.Delete(leafOf(t, u, it, "data/size-01048579"))
			return it
		}, 200},
		{"other-hash", func(t *testing.T, u *upstream) published {
			return u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, func(n *narinfo.Narinfo) { n.NarHash[3] ^= 1 })
		}, 200},
		{"other-tree", func(t *testing.T, u *upstream) published {
			// A publisher's mistake: a signed narinfo whose ERIS field names
			// another tree.
			o := u.publish(t, "/gnu/store/"+hashPart(8)+"-other", other, nil)
			return u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, func(n *narinfo.Narinfo) { n.ERIS = o.info.ERIS })
		}, 200},
		{"claims-shorter", func(t *testing.T, u *upstream) published {
			return u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, func(n *narinfo.Narinfo) { n.NarSize -= 4096 })
		}, 200},
		{"missing-index", func(t *testing.T, u *upstream) published {
			it := u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, nil)
			u.store.Delete(it.info.ERIS.Root())
			return it
		}, http.StatusBadGateway},
		{"corrupt-index", func(t *testing.T, u *upstream) published {
			it := u.publish(t, "/gnu/store/"+hashPart(7)+"-sample", src, nil)
			root := it.info.ERIS.Root()
			u.store.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
				if ref == root {
					b[0] ^= 1
				}
				return b, nil
			}
			return it
		}, http.StatusBadGateway},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t)
			it := c.setup(t, u)
			url, srv := serve(t, u, u.store, Options{Trust: Trust{ACL: narinfo.NewACL(u.key.Public())}})
			r := get(t, "GET", url+"/nar/"+it.info.BaseName())
			if r.status != c.status {
				t.Fatalf("status %d, want %d", r.status, c.status)
			}
			if c.status == 200 {
				if !aborted(r.readErr) {
					t.Errorf("read error %v, want an aborted body (unexpected EOF)", r.readErr)
				}
				if int64(len(r.body)) >= it.info.NarSize {
					t.Errorf("%d bytes received of a %d-byte nar", len(r.body), it.info.NarSize)
				}
			}
			st := srv.Stats()
			if c.status == 200 && (st.NarsAborted != 1 || st.Nars != 0 || st.Sources[narsource.Tree].Aborted != 1) ||
				c.status != 200 && (st.NarsFailed != 1 || st.Nars != 0 || st.Sources[narsource.Tree].Failed != 1) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// leafOf returns the last leaf of the file at path in it's tree.
func leafOf(t *testing.T, u *upstream, it published, path string) eris.Ref {
	t.Helper()
	var file eris.ReadCapability
	tree := openTree(t, it.info.ERIS, u.store)
	e, err := tree.Lookup(path)
	if err != nil {
		t.Fatal(err)
	}
	file = e.Capability()
	var last eris.Ref
	if err := eris.Walk(context.Background(), file, u.store, func(ref eris.Ref, level int) error {
		if level == 0 {
			last = ref
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return last
}

// TestRejected: upstream narinfos the server must not vouch for are 404.
func TestRejected(t *testing.T) {
	u := newUpstream(t)
	src := specTree(t)
	stranger, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := u.publish(t, "/gnu/store/"+hashPart(10)+"-tree", src, nil)
	u.publish(t, "/nix/store/"+hashPart(11)+"-tree", src, nil)
	u.publish(t, "/gnu/store/"+hashPart(12)+"-tree", src, func(n *narinfo.Narinfo) { n.ERIS = eris.ReadCapability{} })
	// Signed by a key nobody trusts.
	n := *good.info
	n.StorePath = "/gnu/store/" + hashPart(13) + "-tree"
	raw, err := n.Sign(narinfo.ERISv4, stranger, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	u.write(t, hashPart(13), raw)
	// A good narinfo under another item's name.
	u.write(t, hashPart(14), good.info.Raw())
	// Altered after signing.
	u.write(t, hashPart(15), bytes.Replace(good.info.Raw(), []byte(hashPart(10)), []byte(hashPart(15)), 1))
	u.write(t, hashPart(16), []byte("StorePath: nonsense\n"))

	url, srv := serve(t, u, u.store, Options{Trust: Trust{ACL: narinfo.NewACL(u.key.Public())}})
	if r := get(t, "GET", url+"/"+hashPart(10)+".narinfo"); r.status != 200 {
		t.Fatalf("the good narinfo: status %d", r.status)
	}
	for i, why := range map[int]string{11: "another store", 12: "no ERIS", 13: "untrusted key", 14: "another item's narinfo", 15: "altered", 16: "malformed"} {
		if r := get(t, "GET", url+"/"+hashPart(i)+".narinfo"); r.status != 404 {
			t.Errorf("%s: status %d, want 404", why, r.status)
		}
	}
	if st := srv.Stats(); st.Rejected != 6 || st.Narinfos != 1 || st.NarinfoMisses != 6 {
		t.Errorf("stats %+v", st)
	}

	// Trust.Any serves an unsigned upstream narinfo; the keys do not.
	unsigned := *good.info
	unsigned.StorePath = "/gnu/store/" + hashPart(17) + "-tree"
	unsigned.Sigs = nil
	raw, err = unsigned.Marshal(narinfo.ERISv4)
	if err != nil {
		t.Fatal(err)
	}
	u.write(t, hashPart(17), raw)
	if r := get(t, "GET", url+"/"+hashPart(17)+".narinfo"); r.status != 404 {
		t.Errorf("unsigned upstream served under an ACL: status %d", r.status)
	}
	anyURL, _ := serve(t, u, u.store, Options{Trust: Trust{Any: true}})
	if r := get(t, "GET", anyURL+"/"+hashPart(17)+".narinfo"); r.status != 200 {
		t.Errorf("unsigned upstream with Trust.Any: status %d", r.status)
	}
}

// TestNixMode: a Nix store's /nix-cache-info and a narinfo Nix accepts.
func TestNixMode(t *testing.T) {
	u := newUpstream(t)
	it := u.publish(t, "/nix/store/"+hashPart(20)+"-tree", specTree(t), nil)
	own, err := narinfo.GenerateNixKey("loopback-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := serve(t, u, u.store, Options{StoreDir: "/nix/store", NixKey: &own, WantMassQuery: true, Priority: 30,
		Trust: Trust{NixKeys: []narinfo.NixPublicKey{u.nix.Public()}}})
	if r := get(t, "GET", url+"/nix-cache-info"); string(r.body) != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" {
		t.Errorf("nix-cache-info %q", r.body)
	}
	if r := get(t, "GET", url+"/signing-key.pub"); string(r.body) != own.Public().String()+"\n" {
		t.Errorf("signing-key.pub %q, want the Nix public key", r.body)
	}
	r := get(t, "GET", url+"/"+hashPart(20)+".narinfo")
	n, err := narinfo.Parse(r.body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.VerifyNix([]narinfo.NixPublicKey{own.Public()}); err != nil || !n.Equivalent(it.info) {
		t.Errorf("Nix Sig: %v; equivalent %v\n%s", err, n.Equivalent(it.info), r.body)
	}
	if !bytes.Contains(r.body, []byte("\nSig: loopback-1:")) || bytes.Contains(r.body, []byte("Signature:")) {
		t.Errorf("want a Sig field and no Guix Signature:\n%s", r.body)
	}
}

// TestPipelined: Guix sends its narinfo requests pipelined on one
// connection and reads the answers in order (spec §1.7, §5).
func TestPipelined(t *testing.T) {
	u := newUpstream(t)
	src := specTree(t)
	for i := 30; i < 33; i++ {
		u.publish(t, fmt.Sprintf("/gnu/store/%s-tree-%d", hashPart(i), i), src, nil)
	}
	url, _ := serve(t, u, u.store, Options{Trust: Trust{Any: true}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var reqs bytes.Buffer
	order := []int{31, 99, 30, 32}
	for _, i := range order {
		fmt.Fprintf(&reqs, "GET /%s.narinfo HTTP/1.1\r\nHost: localhost\r\nUser-Agent: GNU Guile\r\n\r\n", hashPart(i))
	}
	if _, err := conn.Write(reqs.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for _, i := range order {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if i == 99 {
			if resp.StatusCode != 404 {
				t.Errorf("missing item: status %d", resp.StatusCode)
			}
			continue
		}
		if want := fmt.Sprintf("StorePath: /gnu/store/%s-tree-%d\n", hashPart(i), i); resp.StatusCode != 200 || !bytes.HasPrefix(body, []byte(want)) {
			t.Errorf("answer %d: status %d, body %q", i, resp.StatusCode, body)
		}
	}
}

// TestServeStops: cancelling Serve's context ends it, and a nar stream in
// progress, without leaving goroutines behind.
func TestServeStops(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	u := newUpstream(t)
	it := u.publish(t, "/gnu/store/"+hashPart(40)+"-sample", testenv.Sample().WriteDir(t), nil)
	slow := testenv.NewFaulty(u.store)
	url, _, stop := start(t, u, slow, Options{Trust: Trust{Any: true}})

	slow.Set(testenv.Dead) // every block waits for its request to end
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	got := make(chan error, 1)
	go func() {
		resp, err := client.Get(url + "/nar/" + it.info.BaseName())
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	for slow.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	stop()
	if err := <-got; err == nil {
		t.Errorf("the client got a whole response from a server that stopped")
	}
}
