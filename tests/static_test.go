package tests

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"erismount/eris"
	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// countingFiles serves dir with Go's http.FileServer — a plain static file
// server, no erismount in it — counting the bytes of the bodies it sends.
func countingFiles(t *testing.T, dir string) (string, *atomic.Int64) {
	t.Helper()
	var sent atomic.Int64
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.ServeHTTP(countingWriter{w, &sent}, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &sent
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// publishStatic publishes the tree at src as the store item path into a
// static cache in site (narinfos, nar/, blocks/), signed with a fresh Nix
// key and a fresh Guix key, and returns the keys and the parsed narinfo.
func publishStatic(t *testing.T, src, path, site string, comps string) (narinfo.NixPublicKey, *narinfo.PrivateKey, *narinfo.Narinfo) {
	t.Helper()
	keys := t.TempDir()
	sec, _, pub := nixKeys(t, keys, "static-cache-1")
	guixSec, _, guixKey := guixKeys(t, keys, "guix")
	erismount(t, "publish", "--nix-key", sec, "--key", guixSec, "--host", "static", "--store-path", path, "--references", "none",
		"--narinfo-dir", site, "--nar-dir", filepath.Join(site, "nar"), "--compression", comps,
		"--eris-nar", "--blocks-dir", filepath.Join(site, "blocks"), src)
	raw, err := os.ReadFile(filepath.Join(site, strings.TrimPrefix(path, "/nix/store/")[:32]+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return pub, guixKey, n
}

// TestStaticCache: `erismount publish --nar-dir --eris-nar --blocks-dir`
// makes a directory that Go's http.FileServer serves as a complete cache:
// Debian's nix-bin substitutes the item from it (compressed nar, signatures
// required, the ERIS-Nar field unknown to it) and refuses it with another
// key trusted; `erismount mount --peer http://…/blocks?layout=static`
// mounts the tree from it; and the ERIS-Nar blocks, fetched through the
// static layout, give the item's nar at the compressed nar's size.
func TestStaticCache(t *testing.T) {
	spec := testenv.Sample()
	src := spec.WriteDir(t)
	var buf bytes.Buffer
	if err := nar.WriteFS(context.Background(), &buf, nar.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	want := buf.Bytes()

	for _, comp := range []string{compress.Zstd, compress.XZ} {
		t.Run(comp, func(t *testing.T) {
			site := t.TempDir()
			path := testenv.NixStoreDir + "/" + testenv.NixHashPart(t) + "-erismount-static-" + comp
			key, guixKey, n := publishStatic(t, src, path, site, comp)
			url, sent := countingFiles(t, site)
			en, err := n.NarCapability()
			if err != nil || en.Compression != comp {
				t.Fatalf("ERIS-Nar: %v %v\n%s", en, err, n.Raw())
			}
			if len(n.Locations) != 1 || n.Locations[0].URL != "nar/"+comp+"/"+n.BaseName() {
				t.Fatalf("locations %+v", n.Locations)
			}
			if _, err := os.Stat(filepath.Join(site, "nix-cache-info")); err != nil {
				t.Fatal(err)
			}

			t.Run("guix-signature", func(t *testing.T) {
				// The narinfo as a Guix client gets it from the web
				// server: signed over the raw bytes before "Signature:",
				// ERIS-Nar among them.
				code, _, raw := fetch(t, url+"/"+n.BaseName()[:32]+".narinfo")
				if code != http.StatusOK {
					t.Fatalf("GET narinfo: %d", code)
				}
				got, err := narinfo.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				if o, err := got.Verify(narinfo.NewACL(guixKey.Public())); o != narinfo.Valid {
					t.Fatalf("Guix signature %v: %v", o, err)
				}
				signed, _ := got.SignedPart()
				if !bytes.Contains(signed, []byte("\nERIS-Nar: "+en.String()+"\n")) {
					t.Errorf("ERIS-Nar not in the signed part:\n%s", raw)
				}
			})

			t.Run("nix-store", func(t *testing.T) {
				testenv.RequireNix(t)
				t.Cleanup(func() { testenv.NixRemove(t, path) })
				other, _ := narinfo.GenerateNixKey("other-1", nil)
				if err := substitute(t, url, other.Public().String(), path); err == nil || testenv.NixValid(t, path) {
					t.Fatalf("nix-store -r installed %s signed by an untrusted key", path)
				}
				if err := substitute(t, url, key.String(), path); err != nil {
					t.Fatal(err)
				}
				if _, err := testenv.Nix(t, "nix-store", "--verify-path", path); err != nil {
					t.Errorf("nix-store --verify-path: %v", err)
				}
				out, err := testenv.Nix(t, "nix-store", "--dump", path)
				if err != nil || !bytes.Equal([]byte(out), want) {
					t.Errorf("%s restored differs from the tree published (%v)", path, err)
				}
			})

			t.Run("mount", func(t *testing.T) {
				testenv.RequireFUSE(t)
				dir := t.TempDir()
				p := testenv.Start(t, "mount", "--peer", url+"/blocks?layout=static", "--store", filepath.Join(t.TempDir(), "cache.sqlite"), n.ERIS.URN(), dir)
				testenv.WaitMounted(t, p, dir, mountTimeout)
				testenv.CompareDirs(t, src, dir)
				p.Interrupt(t, dir)
			})

			t.Run("eris-nar", func(t *testing.T) {
				ctx := context.Background()
				peer, err := fetcher.Dial(ctx, url+"/blocks?layout=static", fetcher.ClientOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer peer.Close()
				before := sent.Load()
				r, err := eris.NewReader(ctx, en.Capability, peer)
				if err != nil {
					t.Fatal(err)
				}
				// WriteTo streams the leaves in order, each fetched once.
				pr, pw := io.Pipe()
				go func() { _, err := r.WriteTo(pw); pw.CloseWithError(err) }()
				defer pr.Close()
				z, err := compress.NewReader(pr, en.Compression)
				if err != nil {
					t.Fatal(err)
				}
				defer z.Close()
				hw := nar.NewHashingWriter(nil)
				if _, err := io.Copy(hw, z); err != nil {
					t.Fatal(err)
				}
				if hw.Sum() != n.Sum() {
					t.Fatalf("the nar through ERIS-Nar is %s, the narinfo says %s", hw.Sum(), n.Sum())
				}
				moved, fileSize := sent.Load()-before, n.Locations[0].FileSize
				t.Logf("%s nar %d bytes, compressed %d, ERIS-Nar blocks moved %d (%.3f×)", comp, n.NarSize, fileSize, moved, float64(moved)/float64(fileSize))
				// The padded leaves and the internal nodes: at most one
				// 32 KiB block per 511 more, plus two (spec §2.3).
				if limit := fileSize + (fileSize/eris.BlockSize32K/511+2)*eris.BlockSize32K; moved > limit {
					t.Errorf("ERIS-Nar moved %d bytes for a %d-byte compressed nar", moved, fileSize)
				}
			})
		})
	}
}
