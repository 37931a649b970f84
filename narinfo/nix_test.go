package narinfo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

// nixCmd runs a Nix command with the nix-command feature, failing the test
// with its stderr.
func nixCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s (Debian package nix-bin) is absent: no independent Nix to check against", name)
	}
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// nixKey makes a key pair with nix-store --generate-binary-cache-key.
func nixKey(t *testing.T, name string) (secFile string, sec narinfo.NixPrivateKey, pub narinfo.NixPublicKey) {
	t.Helper()
	dir := t.TempDir()
	secFile, pubFile := filepath.Join(dir, "sec"), filepath.Join(dir, "pub")
	nixCmd(t, "nix-store", "--generate-binary-cache-key", name, secFile, pubFile)
	secText, _ := os.ReadFile(secFile)
	pubText, _ := os.ReadFile(pubFile)
	sec, err := narinfo.ParseNixPrivateKey(string(secText))
	if err != nil {
		t.Fatal(err)
	}
	pub, err = narinfo.ParseNixPublicKey(string(pubText))
	if err != nil {
		t.Fatal(err)
	}
	if sec.Public().String() != string(pubText) || sec.String() != string(secText) {
		t.Fatalf("key texts differ from nix-store's: %s / %s", sec.Public(), pubText)
	}
	return secFile, sec, pub
}

func TestNixKeys(t *testing.T) {
	_, sec, pub := nixKey(t, "cache.example.org-1")
	if !sec.Public().Key.Equal(pub.Key) || pub.Name != "cache.example.org-1" {
		t.Fatal("public half does not match")
	}
	k, err := narinfo.GenerateNixKey("mine-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := narinfo.ParseNixPrivateKey(k.String() + "\n")
	if err != nil || !back.Key.Equal(k.Key) {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "name", ":AAAA", "n:!!!", "n:AAAA", strings.Replace(k.String(), k.String()[len(k.String())-8:], "AAAAAAA=", 1)} {
		if _, err := narinfo.ParseNixPrivateKey(bad); !errors.Is(err, narinfo.ErrNixSig) {
			t.Errorf("ParseNixPrivateKey(%q): %v", bad, err)
		}
	}
}

// TestNixSignMatchesNix: `nix store sign` on a real store path gives the
// same Sig as SignNix (Ed25519 is deterministic), and VerifyNix accepts it.
func TestNixSignMatchesNix(t *testing.T) {
	secFile, sec, pub := nixKey(t, "test-1")
	root := filepath.Join(t.TempDir(), "root")
	src := nartest.Build(t, filepath.Join(t.TempDir(), "tree"), nartest.Tree())
	path := strings.TrimSpace(nixCmd(t, "nix-store", "--store", root, "--add", src))
	nixCmd(t, "nix", "store", "sign", "--store", root, "--key-file", secFile, path)
	var info []struct {
		Signatures []string `json:"signatures"`
		NarSize    int64    `json:"narSize"`
	}
	if err := json.Unmarshal([]byte(nixCmd(t, "nix", "path-info", "--store", root, "--json", "--sigs", path)), &info); err != nil || len(info) != 1 {
		t.Fatalf("path-info: %v", err)
	}
	hw := nar.NewHashingWriter(nil)
	if err := nar.WriteFS(context.Background(), hw, nar.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	n := &narinfo.Narinfo{StorePath: path, NarHash: hw.Sum().Hash, NarSize: hw.Sum().Size, References: []string{}}
	if err := n.SignNix(sec); err != nil {
		t.Fatal(err)
	}
	if len(info[0].Signatures) != 1 || n.Sigs[0] != info[0].Signatures[0] {
		t.Fatalf("our Sig %v, nix's %v", n.Sigs, info[0].Signatures)
	}
	if name, err := n.VerifyNix([]narinfo.NixPublicKey{pub}); err != nil || name != "test-1" {
		t.Fatalf("VerifyNix: %q, %v", name, err)
	}
	n.NarSize++
	if _, err := n.VerifyNix([]narinfo.NixPublicKey{pub}); !errors.Is(err, narinfo.ErrNixSig) {
		t.Fatalf("VerifyNix of an altered narinfo: %v", err)
	}
}

// TestNixCopyAcceptsOurCache: a file:// binary cache whose narinfos (with
// references) we wrote and signed is accepted by `nix copy`, and refused
// when the trusted key is another one.
func TestNixCopyAcceptsOurCache(t *testing.T) {
	_, sec, pub := nixKey(t, "test-1")
	_, _, other := nixKey(t, "test-1") // same name, other key
	cache := t.TempDir()
	os.WriteFile(filepath.Join(cache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	os.Mkdir(filepath.Join(cache, "nar"), 0o755)
	items := []struct {
		base string
		tree []nartest.Entry
		refs []string
	}{
		{"0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0", nartest.Vectors()[0].Entries, nil},
		{"1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0", nartest.Tree(),
			[]string{"1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0", "0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0"}},
	}
	for _, it := range items {
		src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), it.tree)
		var buf bytes.Buffer
		hw := nar.NewHashingWriter(&buf)
		if err := nar.WriteFS(context.Background(), hw, nar.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		hash := it.base[:32]
		os.WriteFile(filepath.Join(cache, "nar", hash+".nar"), buf.Bytes(), 0o644)
		n := &narinfo.Narinfo{
			StorePath:  "/nix/store/" + it.base,
			Locations:  []narinfo.Location{{URL: "nar/" + hash + ".nar", Compression: "none", FileSize: hw.Sum().Size}},
			NarHash:    hw.Sum().Hash,
			NarSize:    hw.Sum().Size,
			References: it.refs,
		}
		if err := n.SignNix(sec); err != nil {
			t.Fatal(err)
		}
		text, err := n.Marshal(narinfo.Classic)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(cache, hash+".narinfo"), text, 0o644)
	}
	target := "/nix/store/" + items[1].base
	copyTo := func(root string, key narinfo.NixPublicKey) error {
		p, _ := exec.LookPath("nix")
		cmd := exec.Command(p, "copy", "--from", "file://"+cache, "--to", root, "--option", "trusted-public-keys", key.String(), target)
		cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	}
	nixCmd(t, "nix", "--version")
	if err := copyTo(filepath.Join(t.TempDir(), "bad"), other); err == nil {
		t.Fatal("nix copy accepted our cache under another trusted key: the check proves nothing")
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := copyTo(root, pub); err != nil {
		t.Fatalf("nix copy refused our signed cache: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(root, target, "sub", "x"))
	if err != nil || string(got) != "x" {
		t.Fatalf("copied tree: %q, %v", got, err)
	}
}
