package source

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"erismount/narinfo"
	"erismount/narinfo/nar"
)

// signer makes narinfos signed the Guix and the Nix way.
type signer struct {
	key *narinfo.PrivateKey
	nix narinfo.NixPrivateKey
}

func newSigner(t testing.TB) signer {
	t.Helper()
	key, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	nix, err := narinfo.GenerateNixKey("upstream-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return signer{key: key, nix: nix}
}

func (s signer) trust() Trust {
	return Trust{ACL: narinfo.NewACL(s.key.Public()), NixKeys: []narinfo.NixPublicKey{s.nix.Public()}}
}

// hashPart makes distinct store path hash parts.
func hashPart(i int) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	b := []byte("0q7pcz9hnscl1x29v4nws03i2ii5c8v0")
	for k := 0; k < 4; k++ {
		b[31-k] = alphabet[(i>>(5*k))&31]
	}
	return string(b)
}

// narinfoOf returns a narinfo of item i in storeDir, signed in layout l
// (Guix Signature, and a Nix Sig too), with URL url.
func (s signer) narinfoOf(t testing.TB, storeDir string, i int, l narinfo.Layout, url string) []byte {
	t.Helper()
	var sum nar.Hash
	sum[0] = byte(i)
	n := &narinfo.Narinfo{
		StorePath: storeDir + "/" + hashPart(i) + "-item", NarHash: sum, NarSize: 1000 + int64(i),
		Locations: []narinfo.Location{{URL: url, Compression: "xz", FileSize: 500}},
	}
	if err := n.SignNix(s.nix); err != nil {
		t.Fatal(err)
	}
	raw, err := n.Sign(l, s.key, "upstream")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func writeNarinfo(t testing.TB, dir, hash string, raw []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, hash+".narinfo"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDir(t *testing.T) {
	ctx := context.Background()
	s, other := newSigner(t), newSigner(t)
	dir := t.TempDir()
	writeNarinfo(t, dir, hashPart(1), s.narinfoOf(t, "/gnu/store", 1, narinfo.Classic, "nar/xz/"+hashPart(1)+"-item"))
	writeNarinfo(t, dir, hashPart(2), s.narinfoOf(t, "/gnu/store", 2, narinfo.ERISv4, "https://mirror.example/nar/2"))
	writeNarinfo(t, dir, hashPart(3), other.narinfoOf(t, "/gnu/store", 3, narinfo.Classic, "nar/3"))
	writeNarinfo(t, dir, hashPart(4), s.narinfoOf(t, "/gnu/store", 5, narinfo.Classic, "nar/5")) // another item
	writeNarinfo(t, dir, hashPart(6), s.narinfoOf(t, "/nix/store", 6, narinfo.Classic, "nar/6"))
	tampered := strings.Replace(string(s.narinfoOf(t, "/gnu/store", 7, narinfo.Classic, "nar/7")), "NarSize: 1007", "NarSize: 1008", 1)
	writeNarinfo(t, dir, hashPart(7), []byte(tampered))
	writeNarinfo(t, dir, hashPart(8), []byte("StorePath: nonsense\n"))

	for _, trust := range []struct {
		name string
		t    Trust
	}{
		{"guix", Trust{ACL: narinfo.NewACL(s.key.Public())}},
		{"nix", Trust{NixKeys: []narinfo.NixPublicKey{s.nix.Public()}}},
	} {
		t.Run(trust.name, func(t *testing.T) {
			d, err := NewDir(dir, Options{Trust: trust.t})
			if err != nil {
				t.Fatal(err)
			}
			n, err := d.Narinfo(ctx, hashPart(1))
			if err != nil {
				t.Fatal(err)
			}
			if want := "file://" + dir + "/nar/xz/" + hashPart(1) + "-item"; n.Locations[0].URL != want {
				t.Errorf("location %q, want %q", n.Locations[0].URL, want)
			}
			if n, err := d.Narinfo(ctx, hashPart(2)); err != nil || n.Locations[0].URL != "https://mirror.example/nar/2" {
				t.Errorf("ERISv4 layout, absolute URL: %v, %v", n, err)
			}
			for _, c := range []struct {
				hash string
				want error
				why  string
			}{
				{hashPart(9), ErrUnknown, ""},
				{"not-a-hash", ErrUnknown, ""},
				{hashPart(3), ErrUntrusted, ""},
				{hashPart(4), ErrUntrusted, "is for"},
				{hashPart(6), ErrUntrusted, "/nix/store"},
				{hashPart(7), ErrUntrusted, ""},
				{hashPart(8), narinfo.ErrSyntax, ""},
			} {
				_, err := d.Narinfo(ctx, c.hash)
				if !errors.Is(err, c.want) || !strings.Contains(errString(err), c.why) {
					t.Errorf("%s: %v, want %v (%q)", c.hash, err, c.want, c.why)
				}
				t.Logf("%s: %v", c.hash, err)
			}
		})
	}
	if _, err := NewDir(dir, Options{}); !errors.Is(err, ErrNoTrust) {
		t.Errorf("NewDir without trust: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// upstreamServer is a static substitute server on loopback.
type upstreamServer struct {
	*httptest.Server
	narinfos  atomic.Int64
	cacheInfo string
	files     map[string][]byte
	status    int // if set, the answer to every narinfo request
}

func newUpstreamServer(t testing.TB, storeDir string) *upstreamServer {
	u := &upstreamServer{files: map[string][]byte{}, cacheInfo: "StoreDir: " + storeDir + "\nWantMassQuery: 1\nPriority: 40\n"}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/cache/")
		switch {
		case p == "nix-cache-info" && u.cacheInfo != "":
			w.Write([]byte(u.cacheInfo))
		case strings.HasSuffix(p, ".narinfo"):
			u.narinfos.Add(1)
			if u.status != 0 {
				w.WriteHeader(u.status)
				return
			}
			b, ok := u.files[p]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func TestHTTP(t *testing.T) {
	ctx := context.Background()
	s := newSigner(t)
	up := newUpstreamServer(t, "/nix/store")
	up.files[hashPart(1)+".narinfo"] = s.narinfoOf(t, "/nix/store", 1, narinfo.Classic, "nar/1.nar.xz")
	up.files[hashPart(2)+".narinfo"] = s.narinfoOf(t, "/nix/store", 2, narinfo.Classic, "file:///etc/passwd")
	up.files[hashPart(3)+".narinfo"] = newSigner(t).narinfoOf(t, "/nix/store", 3, narinfo.Classic, "nar/3")

	h, err := NewHTTP(up.URL+"/cache", Options{StoreDir: "/nix/store", Trust: s.trust()})
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.Narinfo(ctx, hashPart(1))
	if err != nil {
		t.Fatal(err)
	}
	if want := up.URL + "/cache/nar/1.nar.xz"; n.Locations[0].URL != want {
		t.Errorf("location %q, want %q", n.Locations[0].URL, want)
	}
	ci, err := h.CacheInfo(ctx)
	if err != nil || ci != (CacheInfo{StoreDir: "/nix/store", WantMassQuery: true, Priority: 40}) {
		t.Errorf("CacheInfo: %+v, %v", ci, err)
	}
	for _, c := range []struct {
		hash string
		want error
		why  string
	}{
		{hashPart(2), ErrUntrusted, "not allowed"},
		{hashPart(3), ErrUntrusted, "no valid signature"},
		{hashPart(4), ErrUnknown, ""},
	} {
		if _, err := h.Narinfo(ctx, c.hash); !errors.Is(err, c.want) || !strings.Contains(errString(err), c.why) {
			t.Errorf("%s: %v, want %v (%q)", c.hash, err, c.want, c.why)
		}
	}

	t.Run("status", func(t *testing.T) {
		up := newUpstreamServer(t, "/nix/store")
		h, err := NewHTTP(up.URL+"/cache/", Options{StoreDir: "/nix/store", Trust: s.trust()})
		if err != nil {
			t.Fatal(err)
		}
		for code, want := range map[int]error{http.StatusForbidden: ErrUnknown, http.StatusGone: ErrUnknown} {
			up.status = code
			if _, err := h.Narinfo(ctx, hashPart(1)); !errors.Is(err, want) {
				t.Errorf("HTTP %d: %v, want %v", code, err, want)
			}
		}
		up.status = http.StatusInternalServerError
		_, err = h.Narinfo(ctx, hashPart(1))
		if err == nil || errors.Is(err, ErrUnknown) || errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "HTTP 500") {
			t.Errorf("HTTP 500: %v, want a transport failure", err)
		}
	})

	t.Run("wrong-store", func(t *testing.T) {
		h, err := NewHTTP(up.URL+"/cache", Options{StoreDir: "/gnu/store", Trust: s.trust()})
		if err != nil {
			t.Fatal(err)
		}
		before := up.narinfos.Load()
		if _, err := h.Narinfo(ctx, hashPart(1)); !errors.Is(err, ErrWrongStore) {
			t.Errorf("got %v, want ErrWrongStore", err)
		}
		if up.narinfos.Load() != before {
			t.Errorf("a narinfo was asked for although the store is another")
		}
	})

	t.Run("no-cache-info", func(t *testing.T) {
		up := newUpstreamServer(t, "")
		up.cacheInfo = ""
		up.files[hashPart(1)+".narinfo"] = s.narinfoOf(t, "/gnu/store", 1, narinfo.Classic, "nar/1")
		h, err := NewHTTP(up.URL+"/cache", Options{Trust: s.trust()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Narinfo(ctx, hashPart(1)); err != nil {
			t.Errorf("without /nix-cache-info: %v", err)
		}
	})

	t.Run("down", func(t *testing.T) {
		up := newUpstreamServer(t, "/nix/store")
		h, err := NewHTTP(up.URL, Options{StoreDir: "/nix/store", Trust: s.trust()})
		if err != nil {
			t.Fatal(err)
		}
		up.Close()
		_, err = h.Narinfo(ctx, hashPart(1))
		if err == nil || errors.Is(err, ErrUnknown) || errors.Is(err, ErrUntrusted) {
			t.Errorf("upstream down: %v, want a transport failure", err)
		}
	})

	for _, bad := range []string{"ftp://x", "http://", "file:///tmp", "http://h/?q=1"} {
		if _, err := NewHTTP(bad, Options{Trust: s.trust()}); err == nil {
			t.Errorf("NewHTTP(%q) accepted", bad)
		}
	}
}

// fake is a Lookup with canned answers that counts its calls.
type fake struct {
	answers map[string]func() (*narinfo.Narinfo, error)
	calls   atomic.Int64
}

func (f *fake) Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error) {
	f.calls.Add(1)
	if a, ok := f.answers[hashPart]; ok {
		return a()
	}
	return nil, unknown(hashPart, "fake")
}

func TestChain(t *testing.T) {
	ctx := context.Background()
	found := &narinfo.Narinfo{StorePath: "/gnu/store/" + hashPart(1) + "-x"}
	untrusted := func() (*narinfo.Narinfo, error) {
		return nil, &UntrustedError{HashPart: hashPart(1), Origin: "a", Reason: errors.New("bad")}
	}
	down := func() (*narinfo.Narinfo, error) { return nil, errors.New("connection refused") }
	ok := func() (*narinfo.Narinfo, error) { return found, nil }
	for _, c := range []struct {
		name    string
		answers []func() (*narinfo.Narinfo, error)
		want    error // nil: found
		calls   []int64
	}{
		{"first", []func() (*narinfo.Narinfo, error){ok, ok}, nil, []int64{1, 0}},
		{"after-unknown", []func() (*narinfo.Narinfo, error){nil, ok}, nil, []int64{1, 1}},
		{"after-untrusted", []func() (*narinfo.Narinfo, error){untrusted, ok}, nil, []int64{1, 1}},
		{"after-down", []func() (*narinfo.Narinfo, error){down, ok}, nil, []int64{1, 1}},
		{"unknown", []func() (*narinfo.Narinfo, error){nil, nil}, ErrUnknown, []int64{1, 1}},
		{"untrusted", []func() (*narinfo.Narinfo, error){nil, untrusted}, ErrUntrusted, []int64{1, 1}},
		{"down-wins", []func() (*narinfo.Narinfo, error){untrusted, down}, nil, []int64{1, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var chain Chain
			var fakes []*fake
			for _, a := range c.answers {
				f := &fake{answers: map[string]func() (*narinfo.Narinfo, error){}}
				if a != nil {
					f.answers[hashPart(1)] = a
				}
				fakes = append(fakes, f)
				chain = append(chain, f)
			}
			n, err := chain.Narinfo(ctx, hashPart(1))
			switch {
			case c.name == "down-wins":
				if err == nil || errors.Is(err, ErrUntrusted) || errors.Is(err, ErrUnknown) {
					t.Errorf("got %v, want the transport failure", err)
				}
			case c.want == nil && (err != nil || n != found):
				t.Errorf("got %v, %v, want the narinfo", n, err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Errorf("got %v, want %v", err, c.want)
			}
			for i, f := range fakes {
				if f.calls.Load() != c.calls[i] {
					t.Errorf("source %d asked %d times, want %d", i, f.calls.Load(), c.calls[i])
				}
			}
		})
	}
}

func TestCache(t *testing.T) {
	ctx := context.Background()
	s := newSigner(t)
	dir := t.TempDir()
	writeNarinfo(t, dir, hashPart(1), s.narinfoOf(t, "/gnu/store", 1, narinfo.Classic, "nar/1"))
	writeNarinfo(t, dir, hashPart(2), newSigner(t).narinfoOf(t, "/gnu/store", 2, narinfo.Classic, "nar/2"))
	d, err := NewDir(dir, Options{Trust: s.trust()})
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	next := &fake{answers: map[string]func() (*narinfo.Narinfo, error){}}
	for _, i := range []int{1, 2, 3} {
		next.answers[hashPart(i)] = func() (*narinfo.Narinfo, error) {
			if failing.Load() {
				return nil, errors.New("upstream down")
			}
			return d.Narinfo(ctx, hashPart(i))
		}
	}
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "narinfo.sqlite")
	opts := CacheOptions{TTL: time.Hour, NegativeTTL: time.Minute, Trust: s.trust(), Now: clock, Scope: "a"}
	c, err := OpenCache(path, next, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ask := func(i int) error {
		t.Helper()
		n, err := c.Narinfo(ctx, hashPart(i))
		if err == nil && !strings.HasPrefix(n.Locations[0].URL, "file://"+dir+"/") {
			t.Errorf("cached location %q is not the resolved one", n.Locations[0].URL)
		}
		return err
	}
	for round := range 2 { // the second round from the cache
		if err := ask(1); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := ask(2); !errors.Is(err, ErrUntrusted) {
			t.Errorf("round %d: untrusted: %v", round, err)
		}
		if err := ask(3); !errors.Is(err, ErrUnknown) {
			t.Errorf("round %d: unknown: %v", round, err)
		}
	}
	if got := next.calls.Load(); got != 3 {
		t.Errorf("next asked %d times, want 3", got)
	}
	if st := c.Stats(); st != (CacheStats{Hits: 1, NegativeHits: 2, Misses: 3}) {
		t.Errorf("stats %+v", st)
	}
	// Only the found entry is listed (untrusted and unknown are not items).
	if got, err := c.HashParts(ctx); err != nil || !slices.Equal(got, []string{hashPart(1)}) {
		t.Errorf("HashParts = %v, %v; want [%s]", got, err, hashPart(1))
	}

	// Negative entries expire first; a transport failure is not remembered.
	now = now.Add(2 * time.Minute)
	failing.Store(true)
	if err := ask(1); err != nil {
		t.Errorf("positive entry gone after 2 minutes: %v", err)
	}
	for range 2 {
		if err := ask(3); err == nil || errors.Is(err, ErrUnknown) {
			t.Errorf("after the negative TTL: %v, want the transport failure", err)
		}
	}
	if got := next.calls.Load(); got != 5 {
		t.Errorf("next asked %d times, want 5", got)
	}
	now = now.Add(time.Hour)
	if err := ask(1); err == nil {
		t.Errorf("positive entry served after its TTL")
	}
	if got, err := c.HashParts(ctx); err != nil || len(got) != 0 {
		t.Errorf("HashParts after every TTL = %v, %v; want none", got, err)
	}
	if n, err := c.Expire(ctx); err != nil || n != 3 {
		t.Errorf("Expire: %d, %v; want 3 (all expired)", n, err)
	}
	failing.Store(false)
	if err := ask(1); err != nil {
		t.Fatal(err)
	}

	// Reopened with another scope, or with trust withdrawn: not used.
	c.Close()
	for _, o := range []CacheOptions{
		{Trust: s.trust(), Now: clock, Scope: "b"},
		{Trust: Trust{ACL: narinfo.NewACL(newSigner(t).key.Public())}, Now: clock, Scope: "a"},
	} {
		before := next.calls.Load()
		c2, err := OpenCache(path, next, o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c2.Narinfo(ctx, hashPart(1))
		if next.calls.Load() != before+1 {
			t.Errorf("%+v: the cached entry was used (%v)", o, err)
		}
		c2.Close()
	}
}

func TestParseCacheInfo(t *testing.T) {
	for _, c := range []struct {
		in   string
		want CacheInfo
		bad  bool
	}{
		{"StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n", CacheInfo{StoreDir: "/gnu/store", Priority: 100}, false},
		{"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\nOther: x\n", CacheInfo{StoreDir: "/nix/store", WantMassQuery: true, Priority: 40}, false},
		{"", CacheInfo{}, false},
		{"StoreDir: relative\n", CacheInfo{}, true},
		{"Priority: high\n", CacheInfo{}, true},
		{"garbage\n", CacheInfo{}, true},
	} {
		got, err := ParseCacheInfo([]byte(c.in))
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("%q: %+v, %v", c.in, got, err)
		}
	}
}

func FuzzParseCacheInfo(f *testing.F) {
	f.Add([]byte("StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ci, err := ParseCacheInfo(b)
		if err == nil && ci.StoreDir != "" && !strings.HasPrefix(ci.StoreDir, "/") {
			t.Errorf("relative StoreDir %q accepted", ci.StoreDir)
		}
	})
}
