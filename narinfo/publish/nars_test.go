package publish

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"erismount/cache/cachetest"
	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
	"erismount/tests/testenv"
)

// decompressTool decompresses file with the reference command-line tool
// of method (an independent peer), or reads it as is for none.
func decompressTool(t *testing.T, method, file string) []byte {
	t.Helper()
	if method == compress.None {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tool := map[string]string{compress.Zstd: "zstd", compress.XZ: "xz", compress.Gzip: "gzip"}[method]
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is absent (.ci/run installs it)", tool)
	}
	out, err := exec.Command(tool, "-dc", file).Output()
	if err != nil {
		t.Fatalf("%s -dc %s: %v", tool, file, err)
	}
	return out
}

// TestNarDir: with NarDir, each item's nar is written compressed with
// each method at nar/<method>/<base name> (none: nar/<base name>); the
// narinfo's locations, after the signature, name those files with the
// right FileSize and FileHash; each file decompresses (by the reference
// tool) to nix-store --dump of the item.
func TestNarDir(t *testing.T) {
	src := testenv.Sample().WriteDir(t)
	key, _ := keys(t)
	root := t.TempDir()
	narDir := filepath.Join(root, "nar")
	comps := []string{compress.Zstd, compress.XZ, compress.None}
	base := hash1 + "-sample-1.0"
	res := items(t, []Item{{StorePath: "/gnu/store/" + base, Path: src}}, eristest.NewStore(),
		Options{Key: key, NarDir: narDir, Compressions: comps})[0]
	n := res.Info
	if len(n.Locations) != len(comps) || len(res.Nars) != len(comps) {
		t.Fatalf("locations %+v, nars %+v", n.Locations, res.Nars)
	}
	signed, _ := n.SignedPart()
	if bytes.Contains(signed, []byte("URL:")) {
		t.Errorf("locations in the signed part:\n%s", res.Narinfo)
	}
	want := nartest.NixDump(t, src)
	for i, c := range comps {
		loc := n.Locations[i]
		rel := "nar/" + c + "/" + base
		if c == compress.None {
			rel = "nar/" + base
		}
		if loc.URL != rel || loc.Compression != c {
			t.Errorf("location %d: %+v, want URL %s", i, loc, rel)
		}
		file := filepath.Join(root, filepath.FromSlash(rel))
		if res.Nars[i].Path != file {
			t.Errorf("nar %d at %s, want %s", i, res.Nars[i].Path, file)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		hw := nar.NewHashingWriter(nil)
		hw.Write(raw)
		if loc.FileSize != int64(len(raw)) || loc.FileHash != hw.Sum().Hash.String() {
			t.Errorf("%s: FileSize %d FileHash %s; the file has %d bytes, %s", c, loc.FileSize, loc.FileHash, len(raw), hw.Sum().Hash)
		}
		if got := decompressTool(t, c, file); !bytes.Equal(got, want) {
			t.Errorf("%s: the file does not decompress to the item's nar", c)
		}
	}
	if _, err := n.NarCapability(); !errors.Is(err, narinfo.ErrNoERISNar) {
		t.Errorf("ERIS-Nar without ERISNar: %v", err)
	}
	// No temporary file is left behind.
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".") {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

// TestERISNar: with ERISNar, the zstd nar is also ERIS content in the block
// store; the signed narinfo carries it as ERIS-Nar above the signature; it
// decodes, decompresses to the item's nar, and costs at most 1 % more than
// the compressed file. It is written for an item ERIS-FS cannot hold too.
func TestERISNar(t *testing.T) {
	key, _ := keys(t)
	// Big enough for a tree of 32 KiB blocks (an internal level).
	spec := testenv.Sample()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		b := make([]byte, 4096+i*97)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		spec[fmt.Sprintf("data/%02d", i)] = testenv.File(hex.EncodeToString(b))
	}
	src := spec.WriteDir(t)
	withEmptyDir := testenv.Sample().WriteDir(t)
	if err := os.Mkdir(filepath.Join(withEmptyDir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		dir    string
		noERIS bool
	}{{"tree", src, false}, {"not ERIS-FS", withEmptyDir, true}} {
		t.Run(c.name, func(t *testing.T) {
			store := eristest.NewStore()
			narDir := t.TempDir()
			res := items(t, []Item{{StorePath: "/gnu/store/" + hash1 + "-sample-1.0", Path: c.dir}}, store,
				Options{Key: key, NarDir: narDir, ERISNar: true})[0]
			if (res.NoERIS != nil) != c.noERIS {
				t.Fatalf("NoERIS %v", res.NoERIS)
			}
			n := res.Info
			if o, err := n.Verify(narinfo.NewACL(key.Public())); o != narinfo.Valid {
				t.Fatalf("%v: %v", o, err)
			}
			en, err := n.NarCapability()
			if err != nil || en.Compression != compress.Zstd {
				t.Fatalf("NarCapability = %v, %v", en, err)
			}
			signed, _ := n.SignedPart()
			if !bytes.Contains(signed, []byte("\nERIS-Nar: "+en.String()+"\n")) {
				t.Fatalf("ERIS-Nar not signed:\n%s", res.Narinfo)
			}
			compressed, err := os.ReadFile(res.Nars[0].Path)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			r, err := eris.NewReader(ctx, en.Capability, store)
			if err != nil {
				t.Fatal(err)
			}
			content, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(content, compressed) {
				t.Fatalf("ERIS-Nar content (%d bytes) is not the compressed nar (%d bytes)", len(content), len(compressed))
			}
			if got := decompressTool(t, en.Compression, res.Nars[0].Path); !bytes.Equal(got, nartest.NixDump(t, c.dir)) {
				t.Fatal("the compressed nar is not the item's")
			}
			var blockBytes int
			tree := &countingStore{Store: eristest.NewStore()}
			{
				// Blocks of the ERIS-Nar alone: encode again into an empty store.
				if _, err := eris.Encode(ctx, bytes.NewReader(compressed), tree, eris.EncodeOptions{BlockSize: eris.BlockSize32K}); err != nil {
					t.Fatal(err)
				}
				blockBytes = int(tree.bytes.Load())
				// No waste beyond ERIS's own: the padded leaves and one
				// 32 KiB node per 512 children a level (spec §2.3) —
				// for a 40 MB nar 1.004×.
				blocks := len(compressed)/eris.BlockSize32K + 1
				for n := blocks; n > 1; {
					n = (n + 511) / 512
					blocks += n
				}
				if blockBytes != blocks*eris.BlockSize32K {
					t.Errorf("ERIS-Nar blocks %d bytes for a compressed nar of %d, want %d blocks", blockBytes, len(compressed), blocks)
				}
				t.Logf("compressed nar %d bytes, its ERIS blocks %d bytes (%.4f×), nar %d", len(compressed), blockBytes, float64(blockBytes)/float64(len(compressed)), n.NarSize)
			}
		})
	}
}

// TestBlockDir: a BlockDir keeps each block as <dir>/<REF>, reads back
// what it stored, says ErrNotFound for a missing block and ErrCorrupt for
// a file that is not its name's block; publishing into one gives a tree
// that reads back (Items checks it) with one file per block.
func TestBlockDir(t *testing.T) {
	ctx := context.Background()
	cachetest.Run(t, func(t *testing.T) eris.BlockStore { return BlockDir{Dir: t.TempDir()} }, cachetest.Options{})
	d := BlockDir{Dir: t.TempDir()}
	block := bytes.Repeat([]byte{7}, eris.BlockSize1K)
	ref := eris.RefOf(block)
	if err := d.PutBlock(ctx, ref, block); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(d.Dir, ref.String())); err != nil || !bytes.Equal(b, block) {
		t.Fatalf("file %s: %v", ref, err)
	}
	if _, err := d.GetBlock(ctx, eris.RefOf([]byte("x"))); !errors.Is(err, eris.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	other := eris.RefOf([]byte("other"))
	os.WriteFile(filepath.Join(d.Dir, other.String()), block, 0o644)
	if _, err := d.GetBlock(ctx, other); !errors.Is(err, eris.ErrCorrupt) {
		t.Errorf("a file holding another block: %v", err)
	}

	key, _ := keys(t)
	dir := BlockDir{Dir: t.TempDir()}
	res := items(t, []Item{{StorePath: "/gnu/store/" + hash1 + "-sample-1.0", Path: testenv.Sample().WriteDir(t)}}, dir, Options{Key: key})[0]
	if res.NoERIS != nil {
		t.Fatal(res.NoERIS)
	}
	entries, _ := os.ReadDir(dir.Dir)
	tree, err := erisfs.Open(ctx, res.Info.ERIS, dir, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refs := map[eris.Ref]bool{}
	tree.WalkBlocks(ctx, func(ref eris.Ref, _ int) error { refs[ref] = true; return nil })
	if len(entries) != len(refs) {
		t.Errorf("%d files for %d blocks", len(entries), len(refs))
	}
}

// countingStore counts the bytes of the distinct blocks put.
type countingStore struct {
	*eristest.Store
	bytes atomic.Int64
}

func (s *countingStore) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	if _, err := s.Store.GetBlock(ctx, ref); err == nil {
		return nil
	}
	s.bytes.Add(int64(len(b)))
	return s.Store.PutBlock(ctx, ref, b)
}
