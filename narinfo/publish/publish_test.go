package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/erisnar"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
	"erismount/tests/testenv"
)

// keys are a Guix and a Nix signing key.
func keys(t testing.TB) (*narinfo.PrivateKey, *narinfo.NixPrivateKey) {
	t.Helper()
	k, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := narinfo.GenerateNixKey("publisher-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return k, &nk
}

const (
	hash1 = "0q7pcz9hnscl1x29v4nws03i2ii5c8vc"
	hash2 = "1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5"
	hash3 = "6w3fl3a3qv0s6ppz2gpxx0bqb1rx1p5d"
)

// items publishes and fails the test on error.
func items(t testing.TB, its []Item, store eris.BlockStore, opts Options) []Result {
	t.Helper()
	res, err := Items(context.Background(), its, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestGuixNarinfo: a directory item gets a narinfo in the v4 layout with
// ERIS above a valid Guix signature, the nix-hash NarHash, and a tree that
// reads back from the store as nix-store --dump of the item.
func TestGuixNarinfo(t *testing.T) {
	src := testenv.Sample().WriteDir(t)
	key, _ := keys(t)
	store := eristest.NewStore()
	res := items(t, []Item{{
		StorePath:  "/gnu/store/" + hash1 + "-sample-1.0",
		Path:       src,
		References: []string{"/gnu/store/" + hash2 + "-dep", hash1 + "-sample-1.0"},
		Deriver:    "/gnu/store/" + hash3 + "-sample-1.0.drv",
		System:     "x86_64-linux",
	}}, store, Options{Key: key, Host: "publisher"})[0]
	if res.NoERIS != nil {
		t.Fatalf("no ERIS: %v", res.NoERIS)
	}
	n := res.Info
	if outcome, err := n.Verify(narinfo.NewACL(key.Public())); outcome != narinfo.Valid {
		t.Fatalf("signature %v: %v\n%s", outcome, err, res.Narinfo)
	}
	if n.NarHash.Nix32() != nartest.NixHash(t, src) {
		t.Errorf("NarHash %s, nix-hash says %s", n.NarHash, nartest.NixHash(t, src))
	}
	if want := []string{hash2 + "-dep", hash1 + "-sample-1.0"}; fmt.Sprint(n.References) != fmt.Sprint(want) || n.Deriver != hash3+"-sample-1.0.drv" || n.System != "x86_64-linux" {
		t.Errorf("references %v deriver %q system %q", n.References, n.Deriver, n.System)
	}
	// Layout: ERIS signed, the location after the signature (spec §1.3).
	text := string(res.Narinfo)
	signed, _ := n.SignedPart()
	if !strings.Contains(string(signed), "\nERIS: "+n.ERIS.URN()+"\n") {
		t.Errorf("ERIS not in the signed part:\n%s", text)
	}
	after := text[len(signed):]
	wantTail := fmt.Sprintf("URL: nar/%s-sample-1.0\nCompression: none\nFileSize: %d\n", hash1, n.NarSize)
	if !strings.HasPrefix(after, "Signature: 1;publisher;") || !strings.HasSuffix(after, wantTail) {
		t.Errorf("after the signed part:\n%s\nwant the Signature line, then\n%s", after, wantTail)
	}
	tree, err := erisfs.Open(context.Background(), n.ERIS, store, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := erisnar.Write(context.Background(), &buf, tree, erisnar.Options{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), nartest.NixDump(t, src)) {
		t.Errorf("the published tree does not serialize to nix-store --dump of the item")
	}
	if res.Stats.Files == 0 || res.Stats.Blocks == 0 {
		t.Errorf("stats %+v", res.Stats)
	}
}

// TestNixNarinfo: with a Nix key only, a Sig over Nix's fingerprint and no
// Guix Signature; with both keys, both verify.
func TestNixNarinfo(t *testing.T) {
	src := nartest.Build(t, filepath.Join(t.TempDir(), "tree"), nartest.Tree())
	key, nixKey := keys(t)
	for _, c := range []struct {
		name string
		opts Options
	}{{"nix", Options{NixKey: nixKey}}, {"both", Options{Key: key, NixKey: nixKey}}} {
		t.Run(c.name, func(t *testing.T) {
			res := items(t, []Item{{StorePath: "/nix/store/" + hash1 + "-tree", Path: src}}, eristest.NewStore(), c.opts)[0]
			if _, err := res.Info.VerifyNix([]narinfo.NixPublicKey{nixKey.Public()}); err != nil {
				t.Errorf("Nix Sig: %v\n%s", err, res.Narinfo)
			}
			outcome, _ := res.Info.Verify(narinfo.NewACL(key.Public()))
			if want := map[bool]narinfo.Outcome{true: narinfo.Valid, false: narinfo.Unsigned}[c.opts.Key != nil]; outcome != want {
				t.Errorf("Guix verdict %v, want %v", outcome, want)
			}
			if res.Info.ERIS.IsZero() || res.Info.NarSize != 1256 {
				t.Errorf("ERIS %v NarSize %d", res.Info.ERIS, res.Info.NarSize)
			}
		})
	}
}

// TestNarInput: publishing the nar of an item gives the same blocks and,
// signatures being deterministic, the same narinfo byte for byte.
func TestNarInput(t *testing.T) {
	src := testenv.Sample().WriteDir(t)
	key, nixKey := keys(t)
	opts := Options{Key: key, NixKey: nixKey}
	fromDir := items(t, []Item{{StorePath: "/gnu/store/" + hash1 + "-sample", Path: src}}, eristest.NewStore(), opts)[0]
	store := eristest.NewStore()
	fromNar := items(t, []Item{{StorePath: "/gnu/store/" + hash1 + "-sample", Nar: bytes.NewReader(nartest.NixDump(t, src))}}, store, opts)[0]
	if !bytes.Equal(fromDir.Narinfo, fromNar.Narinfo) {
		t.Errorf("narinfo from the nar differs from the one from the directory:\n%s\n%s", fromNar.Narinfo, fromDir.Narinfo)
	}
	if fromNar.NoERIS != nil || store.Len() == 0 {
		t.Errorf("no ERIS (%v) or no blocks (%d)", fromNar.NoERIS, store.Len())
	}
}

// TestNoERIS: an item ERIS-FS cannot represent, or whose tree would not
// serialize back to its nar, gets a signed narinfo with its true NarHash
// and no ERIS field, and the reason.
func TestNoERIS(t *testing.T) {
	key, _ := keys(t)
	withEmptyDir := testenv.Sample().WriteDir(t)
	if err := os.Mkdir(filepath.Join(withEmptyDir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	notUTF8 := nartest.Build(t, filepath.Join(t.TempDir(), "item"), []nartest.Entry{
		{Type: nar.Directory}, {Path: "caf\xe9", Type: nar.Regular, Data: "latin-1 name"}})
	cases := []struct {
		name string
		item func() Item
		opts erisfs.EncodeOptions
		want error
	}{
		{"empty-dir", func() Item { return Item{Path: withEmptyDir} }, erisfs.EncodeOptions{}, erisfs.ErrUnrepresentable},
		{"empty-dir-nar", func() Item { return Item{Nar: bytes.NewReader(nartest.NixDump(t, withEmptyDir))} }, erisfs.EncodeOptions{}, erisfs.ErrUnrepresentable},
		{"not-utf8-nar", func() Item { return Item{Nar: bytes.NewReader(nartest.NixDump(t, notUTF8))} }, erisfs.EncodeOptions{}, erisfs.ErrUnrepresentable},
		{"dropped", func() Item { return Item{Path: withEmptyDir} }, erisfs.EncodeOptions{DropUnrepresentable: true}, narinfo.ErrMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			it := c.item()
			it.StorePath = "/gnu/store/" + hash1 + "-odd"
			res := items(t, []Item{it}, eristest.NewStore(), Options{Key: key, Encode: c.opts})[0]
			if !errors.Is(res.NoERIS, c.want) {
				t.Fatalf("NoERIS %v, want %v", res.NoERIS, c.want)
			}
			if !res.Info.ERIS.IsZero() || bytes.Contains(res.Narinfo, []byte("ERIS")) {
				t.Errorf("narinfo has an ERIS field:\n%s", res.Narinfo)
			}
			if outcome, _ := res.Info.Verify(narinfo.NewACL(key.Public())); outcome != narinfo.Valid {
				t.Errorf("signature %v", outcome)
			}
			dir := withEmptyDir
			if c.name == "not-utf8-nar" {
				dir = notUTF8
			}
			if res.Info.NarHash.Nix32() != nartest.NixHash(t, dir) {
				t.Errorf("NarHash %s, nix-hash says %s", res.Info.NarHash, nartest.NixHash(t, dir))
			}
		})
	}
}

// losingStore accepts blocks and keeps none, like a peer that lies about
// PUT.
type losingStore struct{ *eristest.Store }

func (losingStore) PutBlock(context.Context, eris.Ref, []byte) error { return nil }

// failingStore refuses every block after the first n.
type failingStore struct {
	*eristest.Store
	n atomic.Int64
}

var errFull = errors.New("store full")

func (f *failingStore) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	if f.n.Add(-1) < 0 {
		return errFull
	}
	return f.Store.PutBlock(ctx, ref, b)
}

// TestErrors: what stops publishing, with an error naming the item.
func TestErrors(t *testing.T) {
	key, _ := keys(t)
	src := testenv.Sample().WriteDir(t)
	withSocket := t.TempDir()
	if err := os.WriteFile(filepath.Join(withSocket, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(withSocket, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	notUTF8 := nartest.Build(t, filepath.Join(t.TempDir(), "item"), []nartest.Entry{
		{Type: nar.Directory}, {Path: "caf\xe9", Type: nar.Regular, Data: "latin-1 name"}})
	good := nartest.NixDump(t, src)
	sp := "/gnu/store/" + hash1 + "-x"
	failing := &failingStore{Store: eristest.NewStore()}
	failing.n.Store(5)
	cases := []struct {
		name  string
		item  Item
		store eris.BlockStore
		opts  Options
		want  error // nil: any error
	}{
		{"no-key", Item{StorePath: sp, Path: src}, eristest.NewStore(), Options{}, ErrNoKey},
		{"bad-store-path", Item{StorePath: "/gnu/store/x", Path: src}, eristest.NewStore(), Options{Key: key}, narinfo.ErrStorePath},
		{"bad-reference", Item{StorePath: sp, Path: src, References: []string{"nonsense"}}, eristest.NewStore(), Options{Key: key}, narinfo.ErrStorePath},
		{"reference-other-store", Item{StorePath: sp, Path: src, References: []string{"/nix/store/" + hash2 + "-y"}}, eristest.NewStore(), Options{Key: key}, narinfo.ErrStorePath},
		{"missing-path", Item{StorePath: sp, Path: filepath.Join(src, "nothing")}, eristest.NewStore(), Options{Key: key}, os.ErrNotExist},
		{"socket", Item{StorePath: sp, Path: withSocket}, eristest.NewStore(), Options{Key: key}, nil},
		{"malformed-nar", Item{StorePath: sp, Nar: bytes.NewReader(good[:len(good)-8])}, eristest.NewStore(), Options{Key: key}, nar.ErrFormat},
		{"trailing-garbage", Item{StorePath: sp, Nar: bytes.NewReader(append(append([]byte{}, good...), 1))}, eristest.NewStore(), Options{Key: key}, nar.ErrFormat},
		// erisfs.EncodeNar may report its walk's cancellation rather than
		// the store's error that caused it: any error will do.
		{"store-fails", Item{StorePath: sp, Path: src}, failing, Options{Key: key}, nil},
		// io/fs paths are UTF-8: package nar cannot walk such a directory
		// (its nar, from nix-store --dump, is published without ERIS).
		{"not-utf8-dir", Item{StorePath: sp, Path: notUTF8}, eristest.NewStore(), Options{Key: key}, nil},
		{"store-loses-blocks", Item{StorePath: sp, Path: src}, losingStore{eristest.NewStore()}, Options{Key: key}, eris.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := Items(context.Background(), []Item{c.item}, c.store, c.opts)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("err %v (%d results), want %v", err, len(res), c.want)
			}
			if c.want != ErrNoKey && !strings.Contains(err.Error(), c.item.StorePath) {
				t.Errorf("error %q does not name the item", err)
			}
		})
	}
}

// TestMany: items published concurrently come back in order, each reported
// once, and WriteNarinfo lays them out as a binary cache.
func TestMany(t *testing.T) {
	key, _ := keys(t)
	store := eristest.NewStore()
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	var its []Item
	for i := range 12 {
		dir := testenv.Spec{"f": testenv.File(fmt.Sprintf("item %d\n", i)), "bin/x": testenv.Exec("#!/bin/sh\n")}.WriteDir(t)
		its = append(its, Item{StorePath: fmt.Sprintf("/gnu/store/%s%c-item-%d", hash1[:31], alphabet[i], i), Path: dir})
	}
	var done atomic.Int64
	res := items(t, its, store, Options{Key: key, Concurrency: 4, Done: func(Result) { done.Add(1) }})
	if done.Load() != int64(len(its)) {
		t.Errorf("Done called %d times for %d items", done.Load(), len(its))
	}
	out := t.TempDir()
	for i, r := range res {
		if r.StorePath != its[i].StorePath || r.NoERIS != nil {
			t.Errorf("result %d: %s (no ERIS: %v), want %s", i, r.StorePath, r.NoERIS, its[i].StorePath)
		}
		path, err := WriteNarinfo(out, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(out, its[i].StorePath[len("/gnu/store/"):][:32]+".narinfo"); path != want {
			t.Errorf("narinfo at %s, want %s", path, want)
		}
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, r.Narinfo) {
			t.Errorf("%s: %v", path, err)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != len(its) {
		t.Errorf("%d files in the narinfo directory, want %d", len(entries), len(its))
	}
}
