package tests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// TestSubstituteGuixUpstream: substitute-server --upstream in front of a
// Guix-style server — narinfos signed with the Guix test key in both
// layouts (guix publish's, and the v4 ERIS patches' with the locations
// after the signature), nars compressed with lzip (as ci.guix.gnu.org
// serves them) and zstd, on a plain file server: what it serves is signed
// by its own key, equivalent, and the nars are exact; a narinfo signed by
// a key outside the ACL is not served.
func TestSubstituteGuixUpstream(t *testing.T) {
	if _, err := exec.LookPath("lzip"); err != nil {
		t.Skip("lzip is not installed (Debian package lzip)")
	}
	ctx := context.Background()
	text, err := os.ReadFile("../narinfo/testdata/test-key.sec")
	if err != nil {
		t.Fatal(err)
	}
	guixKey, err := narinfo.ParsePrivateKey(text)
	if err != nil {
		t.Fatal(err)
	}
	acl, err := filepath.Abs("../narinfo/testdata/test.acl")
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	serverSec, _, serverKey := guixKeys(t, keys, "server")
	_, _, stranger := guixKeys(t, keys, "stranger")
	peer := servePutPeer(t, "coap")

	up := t.TempDir()
	os.WriteFile(filepath.Join(up, "nix-cache-info"), []byte("StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n"), 0o644)
	type item struct {
		n   *narinfo.Narinfo
		nar []byte
	}
	publish := func(name string, spec testenv.Spec, method string, layout narinfo.Layout, withERIS bool, key *narinfo.PrivateKey) item {
		src := spec.WriteDir(t)
		var buf bytes.Buffer
		hw := nar.NewHashingWriter(&buf)
		if err := nar.WriteFS(ctx, hw, nar.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		base := testenv.NixHashPart(t) + "-" + name
		var file []byte
		if method == compress.Lzip {
			cmd := exec.Command("lzip", "-c")
			cmd.Stdin = bytes.NewReader(buf.Bytes())
			if file, err = cmd.Output(); err != nil {
				t.Fatal(err)
			}
		} else {
			var cb bytes.Buffer
			w, _ := compress.NewWriter(&cb, method, 0)
			w.Write(buf.Bytes())
			w.Close()
			file = cb.Bytes()
		}
		os.MkdirAll(filepath.Join(up, "nar", method), 0o755)
		if err := os.WriteFile(filepath.Join(up, "nar", method, base), file, 0o644); err != nil {
			t.Fatal(err)
		}
		n := &narinfo.Narinfo{StorePath: "/gnu/store/" + base, NarHash: hw.Sum().Hash, NarSize: hw.Sum().Size,
			References: []string{base}, System: "x86_64-linux",
			Locations: []narinfo.Location{{URL: "nar/" + method + "/" + base, Compression: method, FileSize: int64(len(file))}}}
		if withERIS {
			if n.ERIS, _, err = erisfs.EncodeDir(ctx, src, peer.Store, erisfs.EncodeOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := n.Sign(layout, key, "upstream.example")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(up, base[:32]+".narinfo"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		parsed, err := narinfo.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return item{n: parsed, nar: buf.Bytes()}
	}
	classic := publish("sample-lzip", testenv.Sample(), compress.Lzip, narinfo.Classic, false, guixKey)
	v4 := publish("sample-zstd", testenv.Sample().Without("bin/hello"), compress.Zstd, narinfo.ERISv4, true, guixKey)
	foreign := publish("foreign", testenv.Spec{"a": testenv.File("a\n")}, compress.Zstd, narinfo.Classic, false, stranger)
	upURL := serveDir(t, up)

	t.Run("copy-in", func(t *testing.T) {
		for _, c := range []struct {
			it   item
			args []string
		}{
			{classic, nil},
			{v4, []string{"--peer", peer.URL}},
			{v4, []string{"--peer", peer.URL, "--nar-source", "tree"}},
		} {
			store := filepath.Join(t.TempDir(), "gnu", "store")
			os.MkdirAll(store, 0o755)
			args := append([]string{"copy-in", "-v", "--store", filepath.Join(t.TempDir(), "cache.sqlite"), "--upstream", upURL,
				"--acl", acl, "--store-dir", store, c.it.n.StorePath}, c.args...)
			out, stderr, code := testenv.Run(t, args...)
			if code != 0 || strings.TrimSpace(out) != filepath.Join(store, c.it.n.BaseName()) {
				t.Fatalf("copy-in %v: exit %d, %q\n%s", c.args, code, out, stderr)
			}
			var buf bytes.Buffer
			if err := nar.WriteFS(ctx, &buf, nar.DirFS(filepath.Join(store, c.it.n.BaseName()))); err != nil || !bytes.Equal(buf.Bytes(), c.it.nar) {
				t.Errorf("copy-in %v: the landed item differs (%v)", c.args, err)
			}
			t.Logf("copy-in %v: %s", c.args, regexp.MustCompile(`msg="copy-in nar".*`).FindString(stderr))
		}
		store := filepath.Join(t.TempDir(), "gnu", "store")
		os.MkdirAll(store, 0o755)
		_, stderr, code := testenv.Run(t, "copy-in", "--store", filepath.Join(t.TempDir(), "cache.sqlite"), "--upstream", upURL,
			"--acl", acl, "--store-dir", store, foreign.n.StorePath)
		if code != 4 || !strings.Contains(stderr, "unauthorized key") {
			t.Errorf("copy-in of a foreign-signed item: exit %d, want 4\n%s", code, stderr)
		}
		if es, _ := os.ReadDir(store); len(es) != 0 {
			t.Errorf("store holds %v", es)
		}
	})

	for _, c := range []struct {
		name string
		args []string
		want map[*item]string // the source of each nar
	}{
		{"proxy", nil, map[*item]string{&classic: "upstream", &v4: "upstream"}},
		{"tree", []string{"--peer", peer.URL, "--nar-source", "tree"}, map[*item]string{&v4: "tree"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			url, srv := startSubstituteServer(t, append([]string{"-v", "--upstream", upURL, "--acl", acl, "--key", serverSec}, c.args...)...)
			for it, source := range c.want {
				status, _, body := fetch(t, url+"/"+it.n.BaseName()[:32]+".narinfo")
				if status != 200 {
					t.Fatalf("narinfo of %s: status %d\n%s", it.n.StorePath, status, srv.Stderr())
				}
				n, err := narinfo.Parse(body)
				if err != nil {
					t.Fatal(err)
				}
				if o, err := n.Verify(narinfo.NewACL(serverKey.Public())); o != narinfo.Valid || !n.Equivalent(it.n) || n.ERIS != it.n.ERIS {
					t.Errorf("served narinfo of %s: %v %v\n%s", it.n.StorePath, o, err, body)
				}
				status, _, body = fetch(t, url+"/"+n.Locations[0].URL)
				if status != 200 || !bytes.Equal(body, it.nar) {
					t.Errorf("nar of %s: status %d, %d bytes, want %d", it.n.StorePath, status, len(body), len(it.nar))
				}
				waitLogged(t, srv, `msg="nar served" path=`+it.n.StorePath+` source=`+source+` `)
			}
			if status, _, _ := fetch(t, url+"/"+foreign.n.BaseName()[:32]+".narinfo"); status != 404 {
				t.Errorf("narinfo signed by a key outside the ACL: status %d, want 404", status)
			}
			waitLogged(t, srv, "unauthorized key") // why the foreign narinfo was refused
		})
	}
}
