package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"erismount/cache"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

const narinfoTestdata = "../../narinfo/testdata/"

func TestNarinfoVerifyCLI(t *testing.T) {
	vectorA, err := os.ReadFile(narinfoTestdata + "vector-a.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	acl := narinfoTestdata + "test.acl"
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string
	}{
		{"valid", []string{"narinfo", "verify", "--acl", acl, narinfoTestdata + "vector-b.narinfo"}, "", exitOK, "valid\n"},
		{"stdin", []string{"narinfo", "verify", "--acl", acl, "-"}, string(vectorA), exitOK, "valid\n"},
		{"hash mismatch", []string{"narinfo", "verify", "--acl", acl, "-"}, strings.Replace(string(vectorA), "FileSize: 120", "FileSize: 121", 1), exitCorrupt, "hash mismatch\n"},
		{"missing ACL", []string{"narinfo", "verify", "--acl", "/nonexistent.acl", "-"}, string(vectorA), exitUsage, ""},
		{"unsigned", []string{"narinfo", "verify", "--acl", acl, "-"}, strings.Replace(string(vectorA), "Signature: 1;", "Signature: 2;", 1), exitCorrupt, "unsigned\n"},
		{"malformed", []string{"narinfo", "verify", "--acl", acl, "-"}, "garbage\n", exitUsage, ""},
		{"missing file", []string{"narinfo", "verify", "--acl", acl, "/nonexistent"}, "", exitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := cli(t, tt.stdin, tt.args...)
			if code != tt.code || stdout != tt.stdout {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q", code, stdout, stderr, tt.code, tt.stdout)
			}
		})
	}
	t.Run("unauthorized key", func(t *testing.T) {
		other, _ := narinfo.GenerateKey(nil)
		text, _ := narinfo.NewACL(other.Public()).MarshalText()
		path := filepath.Join(t.TempDir(), "acl")
		os.WriteFile(path, text, 0o644)
		stdout, _, code := cli(t, string(vectorA), "narinfo", "verify", "--acl", path, "-")
		if code != exitCorrupt || stdout != "unauthorized key\n" {
			t.Fatalf("exit %d, %q", code, stdout)
		}
	})
}

func TestNarCLI(t *testing.T) {
	dir := nartest.Build(t, filepath.Join(t.TempDir(), "tree"), nartest.Tree())
	stdout, stderr, code := cli(t, "", "nar", "hash", dir)
	if code != 0 || stdout != "sha256:00f89byy0fpkv87ajlllhjzidpa4nncghhxscmpqmv3zaj074kyq 1256\n" {
		t.Fatalf("nar hash: exit %d, %q, %s", code, stdout, stderr)
	}
	stdout, stderr, code = cli(t, "", "nar", "dump", dir)
	if want := nartest.NixDump(t, dir); code != 0 || stdout != string(want) {
		t.Fatalf("nar dump: exit %d, %d bytes (nix-store: %d), %s", code, len(stdout), len(want), stderr)
	}
	if _, _, code := cli(t, "", "nar", "hash", filepath.Join(dir, "missing")); code != exitUsage {
		t.Fatalf("missing dir: exit %d", code)
	}
}

func TestNarinfoKeygenCLI(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, code := cli(t, "", "narinfo", "keygen", dir); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	sec, _ := os.ReadFile(filepath.Join(dir, "signing-key.sec"))
	pub, _ := os.ReadFile(filepath.Join(dir, "signing-key.pub"))
	k, err := narinfo.ParsePrivateKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := narinfo.ParsePublicKey(pub); err != nil || p != k.Public() {
		t.Fatalf("public key file: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "signing-key.sec")); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %v", fi.Mode())
	}
	if _, _, code := cli(t, "", "narinfo", "keygen", dir); code == 0 {
		t.Fatal("keygen overwrote an existing key")
	}
	if _, stderr, code := cli(t, "", "narinfo", "keygen", "--nix", "test-1", dir); code != 0 {
		t.Fatalf("--nix: exit %d: %s", code, stderr)
	}
	text, _ := os.ReadFile(filepath.Join(dir, "test-1.sec"))
	if _, err := narinfo.ParseNixPrivateKey(string(text)); err != nil {
		t.Fatal(err)
	}
}

// TestCopyInCLI: copy-in from a narinfo whose ERIS-FS blocks are in the
// block store (--store), offline, into a scratch store; then an existing
// item and an altered, re-signed NarHash.
func TestCopyInCLI(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	src := nartest.Build(t, filepath.Join(tmp, "src"), nartest.Tree())
	blocks := filepath.Join(tmp, "blocks.sqlite")
	db, err := cache.OpenSQLite(blocks, cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := erisfs.EncodeDir(ctx, src, db, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	key, _ := narinfo.GenerateKey(nil)
	aclText, _ := narinfo.NewACL(key.Public()).MarshalText()
	acl := filepath.Join(tmp, "acl")
	os.WriteFile(acl, aclText, 0o644)
	hw := nar.NewHashingWriter(nil)
	if err := nar.WriteFS(ctx, hw, nar.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	base := "1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0"
	writeNarinfoAs := func(name, storePath string, sum nar.Sum) string {
		n := &narinfo.Narinfo{StorePath: storePath, NarHash: sum.Hash, NarSize: sum.Size, ERIS: rc, References: []string{}}
		raw, err := n.Sign(narinfo.ERISv4, key, "test")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(tmp, name)
		os.WriteFile(p, raw, 0o644)
		return p
	}
	writeNarinfo := func(name string, sum nar.Sum) string { return writeNarinfoAs(name, "/gnu/store/"+base, sum) }
	good := writeNarinfo("good.narinfo", hw.Sum())
	bad := hw.Sum()
	bad.Hash[0] ^= 1
	altered := writeNarinfo("altered.narinfo", bad)

	store := filepath.Join(tmp, "root", "gnu", "store")
	os.MkdirAll(store, 0o755)
	stdout, stderr, code := cli(t, "", "--store", blocks, "copy-in", "--narinfo", altered, "--acl", acl, "--store-dir", store)
	if code != exitCorrupt {
		t.Fatalf("altered NarHash: exit %d, %s", code, stderr)
	}
	if es, _ := os.ReadDir(store); len(es) != 0 {
		t.Fatalf("something landed: %v", es)
	}
	// Right content, valid signature, but signed for another store.
	other := writeNarinfoAs("other.narinfo", "/srv/other/"+base, hw.Sum())
	_, stderr, code = cli(t, "", "--store", blocks, "copy-in", "--narinfo", other, "--acl", acl, "--store-dir", store)
	if code != exitCorrupt || !strings.Contains(stderr, "/srv/other/"+base) || !strings.Contains(stderr, store) {
		t.Fatalf("item of /srv/other into %s: exit %d, %s; want 4 naming both", store, code, stderr)
	}
	if es, _ := os.ReadDir(store); len(es) != 0 {
		t.Fatalf("something landed: %v", es)
	}
	stdout, stderr, code = cli(t, "", "--store", blocks, "copy-in", "--narinfo", good, "--acl", acl, "--store-dir", store)
	if code != 0 || stdout != filepath.Join(store, base)+"\n" {
		t.Fatalf("exit %d, %q, %s", code, stdout, stderr)
	}
	if p, err := exec.LookPath("nix-hash"); err == nil {
		out, _ := exec.Command(p, "--type", "sha256", "--base32", filepath.Join(store, base)).Output()
		if strings.TrimSpace(string(out)) != hw.Sum().Hash.Nix32() {
			t.Errorf("nix-hash of the copy: %s", out)
		}
	}
	if _, _, code := cli(t, "", "--store", blocks, "copy-in", "--narinfo", good, "--acl", acl, "--store-dir", store); code != exitError {
		t.Fatalf("second copy-in over an existing item: exit %d", code)
	}
	if _, _, code := cli(t, "", "--store", blocks, "copy-in", "--acl", acl); code != exitUsage {
		t.Fatalf("no --narinfo: exit %d", code)
	}
}

// TestKeygenAndNarinfoDirCreated: `narinfo keygen DIR` and `publish
// --narinfo-dir DIR` make a DIR that does not exist yet (mkdir -p), the
// key directory private (0700).
func TestKeygenAndNarinfoDirCreated(t *testing.T) {
	tmp := t.TempDir()
	keys := filepath.Join(tmp, "etc", "keys")
	if _, stderr, code := cli(t, "", "narinfo", "keygen", keys); code != 0 {
		t.Fatalf("keygen into a missing directory: exit %d: %s", code, stderr)
	}
	if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("key directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if _, err := narinfo.ParsePrivateKey(mustRead(t, filepath.Join(keys, "signing-key.sec"))); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "item")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	narFile := filepath.Join(tmp, "item.nar")
	os.WriteFile(narFile, narDump(t, src), 0o644)
	base := "1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-dir-1.0"
	narinfos := filepath.Join(tmp, "out", "narinfo")
	_, stderr, code := cli(t, "", "--store", filepath.Join(tmp, "blocks.sqlite"), "publish", "--key", filepath.Join(keys, "signing-key.sec"),
		"--store-path", "/gnu/store/"+base, "--nar", narFile, "--references", "none", "--narinfo-dir", narinfos)
	if code != 0 {
		t.Fatalf("publish --narinfo-dir into a missing directory: exit %d: %s", code, stderr)
	}
	if _, err := narinfo.Parse(mustRead(t, filepath.Join(narinfos, base[:32]+".narinfo"))); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
