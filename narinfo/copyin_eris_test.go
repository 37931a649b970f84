package narinfo_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/cache"
	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

// published is a store item encoded with ERIS-FS into a peer's store, and
// its narinfo signed (ERIS v4 layout) by a test key the ACL authorizes.
type published struct {
	peer *eristest.Store
	n    *narinfo.Narinfo
	acl  *narinfo.ACL
	key  *narinfo.PrivateKey
	sum  nar.Sum
}

func publish(t *testing.T, src string) *published {
	t.Helper()
	ctx := context.Background()
	peer := eristest.NewStore()
	rc, _, err := erisfs.EncodeDir(ctx, src, peer, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &published{peer: peer, key: key, acl: narinfo.NewACL(key.Public()), sum: narSum(t, nar.DirFS(src))}
	p.n = p.sign(t, p.sum, rc)
	return p
}

// clonePeer returns another peer holding the same blocks.
func (p *published) clonePeer(t *testing.T) *eristest.Store {
	t.Helper()
	c := eristest.NewStore()
	for _, ref := range p.peer.Refs() {
		b, err := p.peer.GetBlock(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		c.PutBlock(context.Background(), ref, b)
	}
	return c
}

// sign writes, signs and parses back a narinfo for the item.
func (p *published) sign(t *testing.T, sum nar.Sum, rc eris.ReadCapability) *narinfo.Narinfo {
	t.Helper()
	return p.signAs(t, "/gnu/store/"+itemBase, sum, rc)
}

// signAs is sign with another store path.
func (p *published) signAs(t *testing.T, storePath string, sum nar.Sum, rc eris.ReadCapability) *narinfo.Narinfo {
	t.Helper()
	n := &narinfo.Narinfo{
		StorePath:  storePath,
		Locations:  []narinfo.Location{{URL: "nar/" + itemBase, Compression: "none", FileSize: sum.Size}},
		NarHash:    sum.Hash,
		NarSize:    sum.Size,
		ERIS:       rc,
		References: []string{itemBase},
	}
	raw, err := n.Sign(narinfo.ERISv4, p.key, "erismount-test")
	if err != nil {
		t.Fatal(err)
	}
	back, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// emptyCache is a fresh block cache in front of peer, as the CLI wires it
// (memory tier, then the peer).
func emptyCache(peer eris.BlockGetter) *cache.Tiered {
	return cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Remote: peer})
}

// TestCopyInERIS: from a signed narinfo, through an empty cache, from a
// peer, into a scratch store — and nothing lands when the peer corrupts
// blocks, when the NarHash was altered and re-signed, or when the key is
// not authorized.
func TestCopyInERIS(t *testing.T) {
	ctx := context.Background()
	src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), nartest.Tree())
	p := publish(t, src)

	t.Run("lands", func(t *testing.T) {
		store := scratchStore(t)
		p.peer.ResetCounts()
		if err := narinfo.CopyInERIS(ctx, p.n, p.acl, emptyCache(p.peer), store, narinfo.CopyInOptions{}); err != nil {
			t.Fatal(err)
		}
		checkLanded(t, store, itemBase, p.sum)
		if p.peer.Gets() == 0 {
			t.Error("no block came from the peer")
		}
	})
	t.Run("corrupting peer", func(t *testing.T) {
		liar := p.clonePeer(t)
		// Leave the index intact, flip a byte in every other block: the
		// tree opens, a file read fails verification.
		index := map[eris.Ref]bool{}
		if _, err := erisfs.Open(ctx, p.n.ERIS, &recorder{g: liar, seen: index}, erisfs.OpenOptions{}); err != nil {
			t.Fatal(err)
		}
		liar.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
			if !index[ref] {
				b[len(b)/2] ^= 1
			}
			return b, nil
		}
		store := scratchStore(t)
		err := narinfo.CopyInERIS(ctx, p.n, p.acl, emptyCache(liar), store, narinfo.CopyInOptions{})
		landsNothing(t, err, eris.ErrCorrupt, store)
	})
	t.Run("corrupting peer, index too", func(t *testing.T) {
		liar := p.clonePeer(t)
		liar.Fault = func(ref eris.Ref, b []byte) ([]byte, error) { b[0] ^= 1; return b, nil }
		store := scratchStore(t)
		err := narinfo.CopyInERIS(ctx, p.n, p.acl, emptyCache(liar), store, narinfo.CopyInOptions{})
		landsNothing(t, err, eris.ErrCorrupt, store)
	})
	t.Run("altered NarHash re-signed", func(t *testing.T) {
		bad := p.sum
		bad.Hash[5] ^= 0x40
		n := p.sign(t, bad, p.n.ERIS)
		if o, err := n.Verify(p.acl); o != narinfo.Valid {
			t.Fatalf("re-signed narinfo: %v, %v", o, err)
		}
		store := scratchStore(t)
		err := narinfo.CopyInERIS(ctx, n, p.acl, emptyCache(p.peer), store, narinfo.CopyInOptions{})
		var me *narinfo.MismatchError
		if !errors.As(err, &me) || me.Got != p.sum || me.Want != bad {
			t.Fatalf("got %v, want a mismatch naming both sums", err)
		}
		if got := storeEntries(t, store); len(got) != 0 {
			t.Fatalf("store holds %v", got)
		}
	})
	t.Run("unauthorized key", func(t *testing.T) {
		other, _ := narinfo.GenerateKey(nil)
		store := scratchStore(t)
		p.peer.ResetCounts()
		err := narinfo.CopyInERIS(ctx, p.n, narinfo.NewACL(other.Public()), emptyCache(p.peer), store, narinfo.CopyInOptions{})
		var ve *narinfo.VerifyError
		if !errors.As(err, &ve) || ve.Outcome != narinfo.UnauthorizedKey {
			t.Fatalf("got %v, want unauthorized key", err)
		}
		if p.peer.Gets() != 0 {
			t.Errorf("%d blocks fetched for an unauthorized narinfo", p.peer.Gets())
		}
		if got := storeEntries(t, store); len(got) != 0 {
			t.Fatalf("store holds %v", got)
		}
	})
	t.Run("another store directory", func(t *testing.T) {
		// Validly signed, right content, but for /srv/other: it must not
		// land in a /gnu/store, and nothing is fetched for it.
		n := p.signAs(t, "/srv/other/"+itemBase, p.sum, p.n.ERIS)
		store := scratchStore(t) // …/gnu/store
		p.peer.ResetCounts()
		err := narinfo.CopyInERIS(ctx, n, p.acl, emptyCache(p.peer), store, narinfo.CopyInOptions{})
		landsNothing(t, err, narinfo.ErrStoreDir, store)
		var se *narinfo.StoreDirError
		if !errors.As(err, &se) || se.ExitCode() != 4 || !strings.Contains(err.Error(), "/srv/other") || !strings.Contains(err.Error(), store) {
			t.Errorf("error %q: want a StoreDirError (exit 4) naming /srv/other and %s", err, store)
		}
		if p.peer.Gets() != 0 {
			t.Errorf("%d blocks fetched for an item of another store", p.peer.Gets())
		}
		// The same item lands in its own store directory under a root.
		own := filepath.Join(t.TempDir(), "srv", "other")
		if err := os.MkdirAll(own, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := narinfo.CopyInERIS(ctx, n, p.acl, emptyCache(p.peer), own, narinfo.CopyInOptions{}); err != nil {
			t.Fatal(err)
		}
		checkLanded(t, own, itemBase, p.sum)
	})
	t.Run("no ERIS field", func(t *testing.T) {
		n := p.sign(t, p.sum, eris.ReadCapability{})
		err := narinfo.CopyInERIS(ctx, n, p.acl, emptyCache(p.peer), scratchStore(t), narinfo.CopyInOptions{})
		if !errors.Is(err, narinfo.ErrNoERIS) {
			t.Fatalf("got %v, want ErrNoERIS", err)
		}
	})
}

// landsNothing checks that a copy-in failed with an error matching want
// and that the store directory stayed empty.
func landsNothing(t *testing.T, err, want error, store string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want an error matching %v", err, want)
	}
	if got := storeEntries(t, store); len(got) != 0 {
		t.Fatalf("store holds %v after a failed copy-in", got)
	}
}

// recorder notes every block fetched through it.
type recorder struct {
	g    eris.BlockGetter
	seen map[eris.Ref]bool
}

func (r *recorder) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	r.seen[ref] = true
	return r.g.GetBlock(ctx, ref)
}

// TestCopyInERISVectors copies every spec tree (§2.3) — single files,
// executables, symlinks and empty directories as roots included — through
// ERIS-FS.
func TestCopyInERISVectors(t *testing.T) {
	for _, v := range nartest.Vectors() {
		t.Run(v.Name, func(t *testing.T) {
			p := publish(t, nartest.Build(t, filepath.Join(t.TempDir(), v.Name), v.Entries))
			if p.sum.Size != v.Size || p.sum.Hash.Nix32() != v.Nix32 {
				t.Fatalf("source serializes to %s", p.sum)
			}
			store := scratchStore(t)
			if err := narinfo.CopyInERIS(context.Background(), p.n, p.acl, emptyCache(p.peer), store, narinfo.CopyInOptions{}); err != nil {
				t.Fatal(err)
			}
			checkLanded(t, store, itemBase, p.sum)
		})
	}
}

// TestCopyInERISRealTree copies a real source tree through ERIS-FS and an
// empty cache; nix-hash checks the result.
func TestCopyInERISRealTree(t *testing.T) {
	p := publish(t, goTree(t))
	store := scratchStore(t)
	if err := narinfo.CopyInERIS(context.Background(), p.n, p.acl, emptyCache(p.peer), store, narinfo.CopyInOptions{}); err != nil {
		t.Fatal(err)
	}
	checkLanded(t, store, itemBase, p.sum)
}
