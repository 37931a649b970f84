package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"erismount/tests/testenv"
)

// TestSuite runs the whole suite — set-up, the nar, zstd and xz nars,
// ERIS-FS and ERIS-Nar in the server's store, every scenario over the
// shaped links, the report — on the small generated tree, so that CI proves
// it works. It asserts no timings: only that every scenario ran, checked
// its NarHash, and moved what it should.
func TestSuite(t *testing.T) {
	testenv.RequireFUSE(t)
	for _, tool := range []string{"zstd", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is absent (.ci/run installs it)", tool)
		}
	}
	cfg := SuiteConfig{
		Items: []string{"generated"}, Shape: Shape{RTT: 2 * time.Millisecond, Rate: 200e6}, Runs: 1,
		GenFiles: 40, GenBytes: 3 << 20, Erismount: testenv.Erismount(t), WorkDir: t.TempDir(), Logger: testenv.Logger(t),
	}
	res, err := RunSuite(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	it := res.Items[0]
	for _, sc := range res.Scenarios {
		ms := it.M[sc.Key]
		if len(ms) != 1 || ms[0].Err != nil || ms[0].Bytes <= 0 {
			t.Errorf("%s: %+v", sc.Key, ms)
		}
	}
	get := func(key string) int64 { return it.M[key][0].Bytes }
	// What each path moves: the compressed nars are smaller than the nar
	// (random content compresses little, the nar's framing does);
	// ERIS-Nar is the zstd nar plus padding and a node; the lazy listing
	// fetches less than the tree; the upgrade less than the whole tree.
	if get(scZstd) > get(scNar) || get(scERISNar) < it.ZstdSize || get(scERISNar) > it.ERISNarBlocks+it.ERISNarBlocks/10 {
		t.Errorf("nar %d, zstd %d (file %d), ERIS-Nar %d (blocks %d)", get(scNar), get(scZstd), it.ZstdSize, get(scERISNar), it.ERISNarBlocks)
	}
	if get(scLsSmall) >= it.Item.Bytes || get(scUpgrade) >= get(scBlocks) || get(scBlocks) < it.Item.Bytes {
		t.Errorf("ls+small %d, upgrade %d, blocks %d of a %d-byte tree", get(scLsSmall), get(scUpgrade), get(scBlocks), it.Item.Bytes)
	}
	var out bytes.Buffer
	res.Markdown(&out, "go run ./tests/bench -suite generated")
	md := out.String()
	t.Log("\n" + md)
	// The JSON of the run renders the same report.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "run.json")
	os.WriteFile(path, b, 0o644)
	again, err := LoadSuiteResults(path)
	if err != nil {
		t.Fatal(err)
	}
	var out2 bytes.Buffer
	again.Markdown(&out2, "go run ./tests/bench -suite generated")
	if out2.String() != md {
		t.Errorf("the report rendered from JSON differs:\n%s", out2.String())
	}
	for _, want := range []string{"| generated |", "whole item: ERIS-Nar (zstd)", "goal ≤ 1.2×", "goal ≤ 1.01×", "Command: `go run ./tests/bench -suite generated`"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

// TestSetupItems: the set-up of real trees — a Go module and its previous
// version through the go command, a Debian package through apt-get
// download and dpkg -x — gives trees with a small file chosen.
func TestSetupItems(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	ctx := context.Background()
	s := &itemSetup{work: t.TempDir(), goBin: goBin}
	it, err := s.goModule(ctx, "golang.org/x/sync", "v0.25.0", "v0.24.0", "x/sync")
	if err != nil {
		t.Fatal(err)
	}
	if err := it.survey(); err != nil || it.Files < 10 || it.Older == "" || len(it.SmallContent) < 200 {
		t.Errorf("module item %+v: %v", it, err)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get: not Debian")
	}
	deb, err := debItem("libattr1")(ctx, s.work, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := deb.survey(); err != nil || deb.Files == 0 {
		t.Errorf("Debian item %+v: %v", deb, err)
	}
}
