package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/narinfo"
)

// TestPublishStatic: publish --nar-dir --compression --eris-nar
// --blocks-dir writes a static cache — the narinfo, nix-cache-info, the
// nars named by the narinfo's URLs, one file per block — and reports it in
// --json; a plain tree goes to --blocks-dir too; misuse is exit 2.
func TestPublishStatic(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	os.WriteFile(filepath.Join(src, "bin/hello"), []byte("#!/bin/sh\necho hello\n"), 0o755)
	os.WriteFile(filepath.Join(src, "README"), []byte(strings.Repeat("read me ", 9000)), 0o644)
	k, err := narinfo.GenerateNixKey("static-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(tmp, "key.sec")
	os.WriteFile(key, []byte(k.String()), 0o600)
	site := filepath.Join(tmp, "site")
	os.Mkdir(site, 0o755)
	path := "/nix/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-hello-1.0"
	common := []string{"--store", filepath.Join(tmp, "unused.sqlite"), "publish", "--nix-key", key, "--store-path", path, "--references", "none"}

	out, stderr, code := cli(t, "", append([]string{"--json"}, append(common, "--narinfo-dir", site, "--nar-dir", filepath.Join(site, "nars"),
		"--compression", "zstd,xz", "--eris-nar", "--blocks-dir", filepath.Join(site, "blocks"), src)...)...)
	if code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	var recs []struct {
		Narinfo string   `json:"narinfo"`
		ERISNar string   `json:"eris_nar"`
		Nars    []string `json:"nars"`
	}
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 1 {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(recs[0].Narinfo)
	if err != nil {
		t.Fatal(err)
	}
	n, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if n.ERISNar.String() != recs[0].ERISNar || n.ERISNar.Compression != "zstd" {
		t.Errorf("ERIS-Nar %q, reported %q", n.ERISNar, recs[0].ERISNar)
	}
	if len(n.Locations) != 2 || len(recs[0].Nars) != 2 {
		t.Fatalf("locations %+v, nars %v", n.Locations, recs[0].Nars)
	}
	for i, loc := range n.Locations {
		// URLs relative to the narinfo directory name the files written.
		if want := filepath.Join(site, filepath.FromSlash(loc.URL)); want != recs[0].Nars[i] {
			t.Errorf("URL %s, file %s", loc.URL, recs[0].Nars[i])
		}
		if fi, err := os.Stat(recs[0].Nars[i]); err != nil || fi.Size() != loc.FileSize {
			t.Errorf("%s: %v, FileSize %d", loc.URL, err, loc.FileSize)
		}
	}
	if !strings.HasPrefix(n.Locations[0].URL, "nars/zstd/") || !strings.HasPrefix(n.Locations[1].URL, "nars/xz/") {
		t.Errorf("locations %+v", n.Locations)
	}
	if info, err := os.ReadFile(filepath.Join(site, "nix-cache-info")); err != nil || !strings.Contains(string(info), "StoreDir: /nix/store\n") {
		t.Errorf("nix-cache-info: %q, %v", info, err)
	}
	if _, err := os.Stat(filepath.Join(site, "blocks", n.ERIS.Root().String())); err != nil {
		t.Errorf("the tree's root block is not in --blocks-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(site, "blocks", n.ERISNar.Capability.Root().String())); err != nil {
		t.Errorf("the ERIS-Nar root block is not in --blocks-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "unused.sqlite")); err == nil {
		t.Errorf("--store written although --blocks-dir was given")
	}

	// A plain tree, into a block directory.
	out, stderr, code = cli(t, "", "publish", "--blocks-dir", filepath.Join(tmp, "plain"), src)
	if code != 0 || !strings.HasPrefix(out, "urn:eris:") {
		t.Fatalf("publish --blocks-dir DIR: exit %d %q: %s", code, out, stderr)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{append(common, "--narinfo-dir", site, "--nar-dir", filepath.Join(tmp, "elsewhere"), src), "must be inside --narinfo-dir"},
		{append(common, "--narinfo-dir", site, "--nar-dir", site, src), "must be inside --narinfo-dir"},
		{append(common, "--nar-dir", filepath.Join(tmp, "n"), "--compression", "brotli", src), "--compression brotli"},
		{append(common, "--nar-dir", filepath.Join(tmp, "n"), "--compression", "bzip2", src), "--compression bzip2"},
		{append(common, "--compression", "xz", src), "needs --nar-dir or --eris-nar"},
		{[]string{"publish", "--nar-dir", filepath.Join(tmp, "n"), src}, "for store items"},
	} {
		if _, stderr, code := cli(t, "", c.args...); code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, want %d and %q: %s", c.args, code, exitUsage, c.want, stderr)
		}
	}
}
