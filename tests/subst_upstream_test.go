package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/tests/testenv"
)

// copyDir copies the files of a binary cache directory (narinfos,
// nix-cache-info, nar/…).
func copyDir(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// binaryCache is a static Nix binary cache written by `nix copy`.
type binaryCache struct {
	dir string
}

func (c binaryCache) narinfoPath(storePath string) string {
	return filepath.Join(c.dir, strings.TrimPrefix(storePath, testenv.NixStoreDir+"/")[:32]+".narinfo")
}

func (c binaryCache) narinfo(t testing.TB, storePath string) *narinfo.Narinfo {
	t.Helper()
	raw, err := os.ReadFile(c.narinfoPath(storePath))
	if err != nil {
		t.Fatal(err)
	}
	n, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatalf("parse the narinfo nix copy wrote: %v\n%s", err, raw)
	}
	return n
}

// edit rewrites the narinfo of storePath.
func (c binaryCache) edit(t testing.TB, storePath string, f func(string) string) {
	t.Helper()
	raw, err := os.ReadFile(c.narinfoPath(storePath))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.narinfoPath(storePath), []byte(f(string(raw))), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nixCopy writes the closure of path into a new binary cache with
// compression method, signed with the Nix secret key file sec.
func nixCopy(t testing.TB, path, method, sec string) binaryCache {
	t.Helper()
	dir := t.TempDir()
	if _, err := testenv.Nix(t, "nix", "--extra-experimental-features", "nix-command", "copy",
		"--to", "file://"+dir+"?compression="+method+"&secret-key="+sec, path); err != nil {
		t.Fatalf("nix copy: %v", err)
	}
	return binaryCache{dir: dir}
}

// treeRefs returns every block reference of the ERIS-FS tree rc (index and
// contents) and, apart, those of the content of the file at path.
func treeRefs(t testing.TB, rc eris.ReadCapability, g eris.BlockGetter, path string) (all, file map[eris.Ref]bool) {
	t.Helper()
	ctx := context.Background()
	all, file = map[eris.Ref]bool{}, map[eris.Ref]bool{}
	add := func(m map[eris.Ref]bool, rc eris.ReadCapability) {
		if err := eris.Walk(ctx, rc, g, func(ref eris.Ref, level int) error {
			m[ref] = true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	add(all, rc)
	tree, err := erisfs.Open(ctx, rc, g, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for e := range tree.All() {
		if e.Kind().IsFile() {
			add(all, e.Capability())
			if e.Path() == path {
				add(file, e.Capability())
			}
		}
	}
	if len(file) == 0 {
		t.Fatalf("no file %s in the tree", path)
	}
	return all, file
}

var narServed = regexp.MustCompile(`msg="nar served" path=(\S+) source=(\S+) url=\S* bytes=(\d+) moved=(\d+)`)

// narsServed returns, per store path, the source and the bytes moved of
// each nar a server's log says it served.
func narsServed(log string) map[string][2]string {
	out := map[string][2]string{}
	for _, m := range narServed.FindAllStringSubmatch(log, -1) {
		out[m[1]] = [2]string{m[2], m[4]}
	}
	return out
}

// TestSubstituteUpstreamNix: a real Nix client restores store items through
// `substitute-server --upstream`, in front of static binary caches written
// by `nix copy` and served by a plain file server, the nar taken from the
// upstream or from the ERIS-FS tree as the choice says; a tampered upstream
// nar installs nothing, and a narinfo with a bad signature is not served.
func TestSubstituteUpstreamNix(t *testing.T) {
	testenv.RequireNix(t)
	ctx := context.Background()
	keys := t.TempDir()
	upSec, _, upKey := nixKeys(t, keys, "upstream-1")
	serverSec, _, serverKey := nixKeys(t, keys, "loopback-1")

	dep := testenv.NixImport(t, testenv.Spec{"lib/libdep.so": testenv.Bytes(testenv.Random(9, 5000))}.WriteDir(t), "erismount-up-dep", nil)
	item := testenv.NixImport(t, testenv.Sample().WriteDir(t), "erismount-up-sample", []string{dep})
	paths := []string{dep, item}
	var nars [][]byte
	for _, p := range paths {
		out, err := testenv.Nix(t, "nix-store", "--dump", p)
		if err != nil {
			t.Fatal(err)
		}
		nars = append(nars, []byte(out))
	}
	xz := nixCopy(t, item, "xz", upSec)
	zst := nixCopy(t, item, "zstd", upSec)
	// The same items as ERIS-FS trees on a CoAP peer.
	peer := servePutPeer(t, "coap")
	erisDir := t.TempDir()
	erismount(t, append([]string{"publish", "--peer", peer.URL, "--nix-key", upSec, "--narinfo-dir", erisDir}, paths...)...)
	// And a complete static cache from publish: zstd nars, ERIS-Nar.
	static := binaryCache{dir: t.TempDir()}
	erismount(t, append([]string{"publish", "--peer", peer.URL, "--nix-key", upSec, "--narinfo-dir", static.dir,
		"--nar-dir", filepath.Join(static.dir, "nar"), "--compression", "zstd", "--eris-nar"}, paths...)...)
	if _, err := testenv.Nix(t, "nix-store", "--delete", item, dep); err != nil {
		t.Fatal(err)
	}

	// An upstream whose narinfos also carry ERIS (the Nix Sig does not
	// cover it), one whose item nar is tampered, one whose item narinfo
	// has a bad signature.
	withERIS := binaryCache{dir: t.TempDir()}
	copyDir(t, xz.dir, withERIS.dir)
	caps := map[string]eris.ReadCapability{}
	for _, p := range paths {
		caps[p] = capabilityOf(t, erisDir, p)
		withERIS.edit(t, p, func(s string) string { return s + "ERIS: " + caps[p].URN() + "\n" })
	}
	tampered := binaryCache{dir: t.TempDir()}
	copyDir(t, xz.dir, tampered.dir)
	{
		n := tampered.narinfo(t, item)
		file := filepath.Join(tampered.dir, n.Locations[0].URL)
		bad := bytes.Clone(nars[1])
		bad[len(bad)*2/3] ^= 0x01 // inside the largest file's content
		var buf bytes.Buffer
		w, _ := compress.NewWriter(&buf, "xz", 0)
		w.Write(bad)
		w.Close()
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	badSig := binaryCache{dir: t.TempDir()}
	copyDir(t, xz.dir, badSig.dir)
	badSig.edit(t, item, func(s string) string {
		return regexp.MustCompile(`(?m)^StorePath: (.*)-erismount-up-sample$`).ReplaceAllString(s, "StorePath: ${1}-erismount-up-sampl3")
	})
	// Blocks held by the server before it starts: every block of both
	// trees but those of bin/hello, the first file of the item's nar.
	allRefs, helloRefs := treeRefs(t, caps[item], peer.Store, "bin/hello")
	depRefs, _ := treeRefs(t, caps[dep], peer.Store, "lib/libdep.so")
	for r := range depRefs {
		allRefs[r] = true
	}
	partial := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "cache.sqlite")
		s := testenv.SQLite(t, path)
		for r := range allRefs {
			if helloRefs[r] {
				continue
			}
			b, err := peer.Store.GetBlock(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.PutBlock(ctx, r, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return path
	}
	deadPeer := func(t *testing.T) string {
		p := servePutPeer(t, "coap")
		return p.URL // nothing stored there: every block is "not found"
	}

	restore := func(t *testing.T, url string, srv *testenv.Process) {
		t.Helper()
		if err := substitute(t, url, serverKey.String(), item); err != nil {
			t.Fatalf("%v\nserver log:\n%s", err, srv.Stderr())
		}
		for i, p := range paths {
			if _, err := testenv.Nix(t, "nix-store", "--verify-path", p); err != nil {
				t.Errorf("nix-store --verify-path %s: %v", p, err)
			}
			out, err := testenv.Nix(t, "nix-store", "--dump", p)
			if err != nil || !bytes.Equal([]byte(out), nars[i]) {
				t.Errorf("%s restored differs (%v)", p, err)
			}
		}
		if _, err := testenv.Nix(t, "nix-store", "--delete", item, dep); err != nil {
			t.Fatal(err)
		}
	}
	server := func(t *testing.T, upstream binaryCache, args ...string) (string, *testenv.Process) {
		return startSubstituteServer(t, append([]string{"-v", "--store-dir", "/nix/store", "--upstream", serveDir(t, upstream.dir),
			"--nix-key", serverSec, "--trusted-nix-key", upKey.String()}, args...)...)
	}
	itemXZ := xz.narinfo(t, item).Locations[0].FileSize

	for _, c := range []struct {
		name     string
		upstream binaryCache
		args     []string
		want     map[string]string // store path → source
	}{
		{"proxy-xz", xz, nil, map[string]string{item: "upstream", dep: "upstream"}},
		{"proxy-zstd", zst, nil, map[string]string{item: "upstream", dep: "upstream"}},
		{"eris-peer-up-tree", withERIS, []string{"--peer", peer.URL, "--nar-source", "tree"}, map[string]string{item: "tree", dep: "tree"}},
		{"eris-peer-up-auto", withERIS, []string{"--peer", peer.URL}, nil},
		{"eris-nar", static, []string{"--peer", peer.URL, "--nar-source", "eris-nar"}, map[string]string{item: "eris-nar", dep: "eris-nar"}},
		{"static-auto", static, []string{"--peer", peer.URL}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			url, srv := server(t, c.upstream, c.args...)
			restore(t, url, srv)
			for _, p := range paths {
				waitLogged(t, srv, `msg="nar served" path=`+p+` source=`+c.want[p]) // c.want[p] "": any source
			}
			t.Logf("served: %v", narsServed(srv.Stderr()))
		})
	}

	t.Run("eris-part-local-takes-the-tree", func(t *testing.T) {
		store := partial(t)
		url, srv := startSubstituteServer(t, "--store", store, "-v", "--metrics", "127.0.0.1:0", "--store-dir", "/nix/store",
			"--upstream", serveDir(t, withERIS.dir), "--peer", peer.URL, "--nix-key", serverSec, "--trusted-nix-key", upKey.String())
		restore(t, url, srv)
		for _, p := range paths {
			waitLogged(t, srv, `msg="nar served" path=`+p)
		}
		served := narsServed(srv.Stderr())
		moved, _ := strconv.ParseInt(served[item][1], 10, 64)
		if served[item][0] != "tree" || served[dep][0] != "tree" || served[dep][1] != "0" || moved == 0 || moved >= itemXZ {
			t.Errorf("served %v: want both from the tree, the dep moving nothing and the item less than its %d-byte xz nar", served, itemXZ)
		}
		t.Logf("item: %s bytes moved from the peer (the blocks of bin/hello), against %d for its xz nar", served[item][1], itemXZ)
		metrics := scrapeMetrics(t, srv.Stderr())
		for _, m := range []string{
			`erismount_substitute_source_nars_total{outcome="verified",source="tree"} 2`,
			fmt.Sprintf(`erismount_substitute_source_moved_bytes_total{source="tree"} %d`, moved),
			`erismount_narinfo_cache_lookups_total{result="miss"}`,
		} {
			if !strings.Contains(metrics, m) {
				t.Errorf("metrics lack %s", m)
			}
		}
	})

	t.Run("eris-only-peer-dead-falls-back-to-the-nar", func(t *testing.T) {
		store := partial(t)
		url, srv := startSubstituteServer(t, "--store", store, "-v", "--store-dir", "/nix/store",
			"--upstream", serveDir(t, withERIS.dir), "--peer", deadPeer(t), "--nix-key", serverSec, "--trusted-nix-key", upKey.String())
		restore(t, url, srv)
		waitLogged(t, srv, `msg="nar source failed before the first byte" path=`+item+` source=tree`)
		waitLogged(t, srv, `msg="nar served" path=`+item+` source=upstream`)
	})

	t.Run("tampered-upstream-nar", func(t *testing.T) {
		url, srv := server(t, tampered)
		if err := substitute(t, url, serverKey.String(), item); err == nil {
			t.Fatalf("nix-store -r succeeded with a tampered nar")
		}
		if testenv.NixValid(t, item) {
			t.Errorf("%s installed from a tampered nar", item)
		}
		waitLogged(t, srv, "hash mismatch")
		testenv.NixRemove(t, item)
		testenv.NixRemove(t, dep)
	})

	t.Run("bad-signature-404", func(t *testing.T) {
		url, srv := server(t, badSig)
		resp, err := http.Get(url + "/" + strings.TrimPrefix(item, "/nix/store/")[:32] + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("narinfo with a bad signature: status %d, want 404", resp.StatusCode)
		}
		if err := substitute(t, url, serverKey.String(), item); err == nil || testenv.NixValid(t, item) {
			t.Errorf("nix-store -r succeeded with a bad upstream signature")
		}
		waitLogged(t, srv, "not trusted")
		testenv.NixRemove(t, dep)
	})
}
