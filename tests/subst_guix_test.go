package tests

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
	"erismount/tests/testenv"
)

// guixItem is a store item published for the Guix side.
type guixItem struct {
	storePath string
	src       string // the tree on disk
}

// writeACL writes a Guix ACL authorizing the keys to path.
func writeACL(t *testing.T, path string, keys ...*narinfo.PrivateKey) string {
	t.Helper()
	acl := narinfo.NewACL()
	for _, k := range keys {
		acl.Authorize(k.Public())
	}
	text, err := acl.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, text, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fetch GETs url with a fresh connection and returns status, header and
// body.
func fetch(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// TestSubstituteGuix: `erismount publish` writes Guix-signed narinfos
// carrying ERIS for store items (from directories and from a nar) to a peer,
// and `erismount substitute-server` serves them as guix publish would:
// narinfos re-signed with its own key (valid under an ACL of that key,
// equivalent to the upstream ones) or unsigned, nars equal to nix-store
// --dump of the items, made from blocks fetched through an empty cache.
func TestSubstituteGuix(t *testing.T) {
	keys := t.TempDir()
	pubSec, _, pubKey := guixKeys(t, keys, "publisher")
	serverSec, serverPub, serverKey := guixKeys(t, keys, "server")
	acl := writeACL(t, filepath.Join(keys, "acl"), pubKey)

	peer := servePutPeer(t, "coap+tcp")
	narinfoDir := t.TempDir()
	sample := guixItem{"/gnu/store/" + testenv.NixHashPart(t) + "-sample-1.0", testenv.Sample().WriteDir(t)}
	tree := guixItem{"/gnu/store/" + testenv.NixHashPart(t) + "-tree-1.0", nartest.Build(t, filepath.Join(t.TempDir(), "tree"), nartest.Tree())}
	odd := guixItem{"/gnu/store/" + testenv.NixHashPart(t) + "-odd-1.0", testenv.Sample().WriteDir(t)}
	if err := os.Mkdir(filepath.Join(odd.src, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	erismount(t, "publish", "--peer", peer.URL, "--key", pubSec, "--host", "publisher", "--narinfo-dir", narinfoDir,
		"--store-path", sample.storePath, "--references", tree.storePath+","+sample.storePath, sample.src)
	narFile := filepath.Join(t.TempDir(), "tree.nar")
	if err := os.WriteFile(narFile, nartest.NixDump(t, tree.src), 0o644); err != nil {
		t.Fatal(err)
	}
	erismount(t, "publish", "--peer", peer.URL, "--key", pubSec, "--narinfo-dir", narinfoDir,
		"--store-path", tree.storePath, "--references", "none", "--nar", narFile)
	// An item ERIS-FS cannot hold: a narinfo without ERIS, reported.
	out, stderr, code := testenv.Run(t, "publish", "--peer", peer.URL, "--key", pubSec, "--narinfo-dir", narinfoDir,
		"--store-path", odd.storePath, "--references", "none", odd.src)
	if code != 0 || strings.TrimSpace(out) != odd.storePath+" -" || !strings.Contains(stderr, "published without ERIS") {
		t.Fatalf("publish of an item with an empty directory: exit %d, %q\n%s", code, out, stderr)
	}
	upstream := func(it guixItem) *narinfo.Narinfo {
		raw, err := os.ReadFile(filepath.Join(narinfoDir, it.storePath[len("/gnu/store/"):][:32]+".narinfo"))
		if err != nil {
			t.Fatal(err)
		}
		n, err := narinfo.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if outcome, err := n.Verify(narinfo.NewACL(pubKey.Public())); outcome != narinfo.Valid {
			t.Fatalf("published narinfo of %s: %v %v", it.storePath, outcome, err)
		}
		return n
	}
	if n := upstream(odd); !n.ERIS.IsZero() || n.NarHash.Nix32() != nartest.NixHash(t, odd.src) {
		t.Errorf("narinfo of the unrepresentable item:\n%s", n.Raw())
	}

	t.Run("re-signed", func(t *testing.T) {
		url, srv := startSubstituteServer(t, "-v", "--metrics", "127.0.0.1:0", "--peer", peer.URL, "--narinfo-dir", narinfoDir,
			"--acl", acl, "--key", serverSec, "--host", "loopback", "--ttl", "36h", "--negative-ttl", "10m")
		serverACL := narinfo.NewACL(serverKey.Public())
		for _, it := range []guixItem{sample, tree} {
			up := upstream(it)
			status, h, body := fetch(t, url+"/"+up.BaseName()[:32]+".narinfo")
			if status != 200 || h.Get("Content-Type") != "application/x-nix-narinfo; charset=UTF-8" || h.Get("Cache-Control") != "max-age=129600" {
				t.Fatalf("narinfo of %s: %d %v", it.storePath, status, h)
			}
			n, err := narinfo.Parse(body)
			if err != nil {
				t.Fatal(err)
			}
			if outcome, err := n.Verify(serverACL); outcome != narinfo.Valid {
				t.Errorf("served narinfo under the server's key: %v %v", outcome, err)
			}
			if !n.Equivalent(up) || n.ERIS != up.ERIS {
				t.Errorf("served narinfo not equivalent to the published one:\n%s\n%s", body, up.Raw())
			}
			loc := n.Locations[0]
			if len(n.Locations) != 1 || loc.URL != "nar/"+up.BaseName() || loc.Compression != "none" || loc.FileSize != up.NarSize {
				t.Errorf("locations %+v", n.Locations)
			}
			status, h, body = fetch(t, url+"/"+loc.URL)
			if status != 200 || h.Get("Content-Length") != fmt.Sprint(up.NarSize) {
				t.Fatalf("nar of %s: %d %v", it.storePath, status, h)
			}
			if !bytes.Equal(body, nartest.NixDump(t, it.src)) {
				t.Errorf("nar of %s differs from nix-store --dump", it.storePath)
			}
			hw := nar.NewHashingWriter(nil)
			hw.Write(body)
			if hw.Sum() != up.Sum() {
				t.Errorf("nar %v, signed %v", hw.Sum(), up.Sum())
			}
		}
		if status, h, _ := fetch(t, url+"/"+upstream(odd).BaseName()[:32]+".narinfo"); status != 404 || h.Get("Cache-Control") != "max-age=600" {
			t.Errorf("narinfo without ERIS: %d %v, want 404 with the negative TTL", status, h)
		}
		if _, _, body := fetch(t, url+"/nix-cache-info"); string(body) != "StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n" {
			t.Errorf("nix-cache-info %q", body)
		}
		want, _ := os.ReadFile(serverPub)
		if _, _, body := fetch(t, url+"/signing-key.pub"); !bytes.Equal(body, want) {
			t.Errorf("signing-key.pub %q, want the server's public key", body)
		}
		metrics := scrapeMetrics(t, srv.Stderr())
		for _, m := range []string{`erismount_cache_misses_total{tier="memory"}`, "erismount_peer_blocks_total{peer="} {
			if !strings.Contains(metrics, m) {
				t.Errorf("metrics lack %s", m)
			}
		}
	})

	t.Run("unsigned", func(t *testing.T) {
		url, _ := startSubstituteServer(t, "--peer", peer.URL, "--narinfo-dir", narinfoDir, "--acl", acl, "--unsigned")
		up := upstream(tree)
		_, _, body := fetch(t, url+"/"+up.BaseName()[:32]+".narinfo")
		n, err := narinfo.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		// Guix's rule (spec §1.7): unsigned here, but equivalent to a
		// narinfo an authorized key signed, so Guix may use it.
		if outcome, _ := n.Verify(narinfo.NewACL(serverKey.Public(), pubKey.Public())); outcome != narinfo.Unsigned || !n.Equivalent(up) {
			t.Errorf("unsigned mode: %v, equivalent %v\n%s", outcome, n.Equivalent(up), body)
		}
		if _, _, body := fetch(t, url+"/signing-key.pub"); !strings.HasPrefix(string(body), "Resource not found") {
			t.Errorf("signing-key.pub without a key: %q", body)
		}
	})

	t.Run("untrusted-upstream", func(t *testing.T) {
		// An ACL without the publisher's key: nothing is served.
		other := writeACL(t, filepath.Join(keys, "other.acl"), serverKey)
		url, _ := startSubstituteServer(t, "--peer", peer.URL, "--narinfo-dir", narinfoDir, "--acl", other, "--key", serverSec)
		if status, _, _ := fetch(t, url+"/"+upstream(tree).BaseName()[:32]+".narinfo"); status != 404 {
			t.Errorf("narinfo signed by an untrusted key served: %d", status)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"substitute-server", "--narinfo-dir", narinfoDir, "--acl", acl},                                   // no key, not --unsigned
			{"substitute-server", "--narinfo-dir", narinfoDir, "--key", serverSec},                             // no trust
			{"substitute-server", "--narinfo-dir", narinfoDir, "--acl", acl, "--key", serverSec, "--unsigned"}, // both
			{"substitute-server", "--acl", acl, "--unsigned"},                                                  // no dir
			{"substitute-server", "--narinfo-dir", narinfoDir, "--acl", acl, "--unsigned", "--listen", "coap://127.0.0.1:0"},
			{"publish", "--key", serverSec, "--references", "none"},  // no item
			{"publish", "--narinfo-dir", narinfoDir, tree.storePath}, // no key
		} {
			if _, stderr, code := testenv.Run(t, args...); code != 2 {
				t.Errorf("erismount %s: exit %d, want 2 (usage)\n%s", strings.Join(args, " "), code, stderr)
			}
		}
	})
}

var metricsURL = regexp.MustCompile(`url=(http://[0-9.:]+/metrics)`)

// scrapeMetrics finds the metrics URL in a server's log and scrapes it.
func scrapeMetrics(t *testing.T, log string) string {
	t.Helper()
	m := metricsURL.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no metrics URL in the log:\n%s", log)
	}
	_, _, body := fetch(t, m[1])
	return string(body)
}
