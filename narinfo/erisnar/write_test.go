package erisnar

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
	"erismount/tests/testenv"
)

// publish encodes the tree at dir into a fresh in-memory store and opens it.
func publish(t testing.TB, dir string) (*erisfs.Tree, *eristest.Store) {
	t.Helper()
	store := eristest.NewStore()
	rc, _, err := erisfs.EncodeDir(context.Background(), dir, store, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatalf("encode %s: %v", dir, err)
	}
	tree, err := erisfs.Open(context.Background(), rc, store, erisfs.OpenOptions{})
	if err != nil {
		t.Fatalf("open %s: %v", rc, err)
	}
	return tree, store
}

// options are the read-ahead shapes every test runs: the default, none at
// all, and tiny small-file limits that send most files down the streaming
// path.
var options = []struct {
	name string
	opts Options
}{
	{"default", Options{}},
	{"no-read-ahead", Options{ReadAhead: 1, SmallFile: 1}},
	{"stream-above-1KiB", Options{SmallFile: 1024}},
	{"stream-above-40KiB", Options{ReadAhead: 3, SmallFile: 40 << 10}},
}

func TestWriteSpecVectors(t *testing.T) {
	for _, v := range nartest.Vectors() {
		if v.Name == "emptydir" {
			continue // an empty root directory is an index with no entries: below
		}
		t.Run(v.Name, func(t *testing.T) {
			root := nartest.Build(t, filepath.Join(t.TempDir(), "item"), v.Entries)
			tree, _ := publish(t, root)
			for _, o := range options {
				var buf bytes.Buffer
				sum, err := Write(context.Background(), &buf, tree, o.opts)
				if err != nil {
					t.Fatalf("%s: %v", o.name, err)
				}
				if sum.Hash.Nix32() != v.Nix32 || sum.Size != v.Size || int64(buf.Len()) != v.Size {
					t.Errorf("%s: nar %s (%d bytes written), spec says sha256:%s %d", o.name, sum, buf.Len(), v.Nix32, v.Size)
				}
				if v.Hex != "" && hex.EncodeToString(buf.Bytes()) != v.Hex {
					t.Errorf("%s: nar bytes differ from the spec's", o.name)
				}
			}
		})
	}
}

func TestWriteEmptyRoot(t *testing.T) {
	tree, _ := publish(t, t.TempDir())
	sum, err := Write(context.Background(), io.Discard, tree, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "0sjjj9z1dhilhpc8pq4154czrb79z9cm044jvn75kxcjv6v5l2m5"; sum.Hash.Nix32() != want || sum.Size != 96 {
		t.Errorf("empty root: %s, want sha256:%s 96 (spec §2.3 emptydir)", sum, want)
	}
}

// TestWriteMatchesNixStore compares with an independent nar writer,
// nix-store --dump, on a tree with files of every size around the ERIS
// block and level boundaries, symlinks and non-ASCII names.
func TestWriteMatchesNixStore(t *testing.T) {
	nartest.NixStore(t)
	dir := testenv.Sample().WriteDir(t)
	want := nartest.NixDump(t, dir)
	tree, _ := publish(t, dir)
	for _, o := range options {
		t.Run(o.name, func(t *testing.T) {
			var buf bytes.Buffer
			sum, err := Write(context.Background(), &buf, tree, o.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("nar differs from nix-store --dump (%d vs %d bytes)", buf.Len(), len(want))
			}
			if sum.Hash.Nix32() != nartest.NixHash(t, dir) || sum.Size != int64(len(want)) {
				t.Errorf("sum %s, nix-hash says %s (%d bytes)", sum, nartest.NixHash(t, dir), len(want))
			}
		})
	}
}

// narinfoFor returns an (unsigned) narinfo claiming sum for a made-up path.
func narinfoFor(sum nar.Sum) *narinfo.Narinfo {
	return &narinfo.Narinfo{StorePath: "/gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erisnar-test", NarHash: sum.Hash, NarSize: sum.Size}
}

// sinkWriter records what it was given, like a client reading a response.
type sinkWriter struct{ bytes.Buffer }

// small is the sample tree without its largest files, for the tests that
// run many cases.
func small() testenv.Spec {
	return testenv.Sample().Without("data/size-03145745", "data/size-01048579")
}

func TestWriteChecked(t *testing.T) {
	dir := small().WriteDir(t)
	tree, _ := publish(t, dir)
	var whole bytes.Buffer
	sum, err := Write(context.Background(), &whole, tree, Options{})
	if err != nil {
		t.Fatal(err)
	}
	other := sum
	other.Hash[0] ^= 1
	cases := []struct {
		name string
		want nar.Sum
		ok   bool
	}{
		{"match", sum, true},
		{"other-hash", other, false},
		{"claims-shorter", nar.Sum{Hash: sum.Hash, Size: sum.Size - 8}, false},
		{"claims-much-shorter", nar.Sum{Hash: sum.Hash, Size: 200}, false},
		{"claims-longer", nar.Sum{Hash: sum.Hash, Size: sum.Size + 8}, false},
	}
	for _, c := range cases {
		for _, o := range options {
			t.Run(c.name+"/"+o.name, func(t *testing.T) {
				var got sinkWriter
				err := WriteChecked(context.Background(), &got, tree, narinfoFor(c.want), o.opts)
				if c.ok {
					if err != nil || !bytes.Equal(got.Bytes(), whole.Bytes()) {
						t.Fatalf("err %v, %d bytes; want the whole nar (%d bytes)", err, got.Len(), whole.Len())
					}
					return
				}
				var me *narinfo.MismatchError
				if !errors.Is(err, narinfo.ErrMismatch) || !errors.As(err, &me) {
					t.Fatalf("err %v, want a *narinfo.MismatchError", err)
				}
				// Never a whole nar: at most the claimed size less the
				// held-back end, and a strict prefix of the real nar.
				if int64(got.Len()) > c.want.Size-holdBack || got.Len() >= whole.Len() || !bytes.HasPrefix(whole.Bytes(), got.Bytes()) {
					t.Errorf("%d bytes passed on (nar %d, claimed %d)", got.Len(), whole.Len(), c.want.Size)
				}
			})
		}
	}
}

// TestWriteBadBlocks: a corrupt or missing block stops the nar short with
// an error naming the file and matching the eris sentinel.
func TestWriteBadBlocks(t *testing.T) {
	tree, store := publish(t, testenv.Sample().WriteDir(t))
	const name = "data/size-01048579"
	e, err := tree.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	leaf := lastLeaf(t, e.Capability(), store)
	block, err := store.GetBlock(context.Background(), leaf)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		fault func()
		want  error
	}{
		{"corrupt", func() {
			store.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
				if ref == leaf {
					b[len(b)/2] ^= 1
				}
				return b, nil
			}
		}, eris.ErrCorrupt},
		{"missing", func() { store.Delete(leaf) }, eris.ErrNotFound},
	}
	for _, c := range cases {
		for _, o := range options {
			t.Run(c.name+"/"+o.name, func(t *testing.T) {
				c.fault()
				defer func() {
					store.Fault = nil
					store.PutBlock(context.Background(), leaf, block)
				}()
				// A fresh tree: no node of the file cached from before.
				tree, err := erisfs.Open(context.Background(), tree.Capability(), store, erisfs.OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				var got sinkWriter
				err = WriteChecked(context.Background(), &got, tree, narinfoFor(nar.Sum{Size: 1 << 30}), o.opts)
				if !errors.Is(err, c.want) {
					t.Fatalf("err %v, want %v", err, c.want)
				}
				if !bytes.Contains([]byte(err.Error()), []byte(name)) {
					t.Errorf("error %q does not name the file", err)
				}
			})
		}
	}
}

// TestWriteBadChunk: a bad leaf early in a large file, with many chunks
// still to read, ends the write at once and leaves no goroutine behind.
func TestWriteBadChunk(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tree, store := publish(t, testenv.Spec{"big": testenv.Bytes(testenv.Random(5, 8<<20))}.WriteDir(t))
	e, err := tree.Lookup("big")
	if err != nil {
		t.Fatal(err)
	}
	var leaves []eris.Ref
	if err := eris.Walk(context.Background(), e.Capability(), store, func(ref eris.Ref, level int) error {
		if level == 0 {
			leaves = append(leaves, ref)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	bad := leaves[10] // at 320 KiB: in the first chunk streamed
	store.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
		if ref == bad {
			b[0] ^= 1
		}
		return b, nil
	}
	_, err = Write(context.Background(), io.Discard, tree, Options{})
	if !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("err %v, want a corrupt block", err)
	}
}

// lastLeaf returns the reference of the last leaf of rc.
func lastLeaf(t *testing.T, rc eris.ReadCapability, g eris.BlockGetter) eris.Ref {
	t.Helper()
	var last eris.Ref
	err := eris.Walk(context.Background(), rc, g, func(ref eris.Ref, level int) error {
		if level == 0 {
			last = ref
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// slowStore answers after a delay, like a peer across a network, and
// honours the caller's context.
type slowStore struct {
	*eristest.Store
	delay time.Duration
}

func (s slowStore) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.GetBlock(ctx, ref)
}

// blockingStore passes gets through until block is set; from then on a get
// says so on entered and waits for the caller's context to end, like a peer
// that never answers.
type blockingStore struct {
	*eristest.Store
	block   atomic.Bool
	entered chan struct{} // one value per blocked get, dropped when full
}

func (s *blockingStore) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if !s.block.Load() {
		return s.Store.GetBlock(ctx, ref)
	}
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestWriteCancel: a write cancelled while its fetches wait returns the
// cancellation and leaves no goroutine behind. The store blocks until the
// test cancels, so nothing depends on how fast the machine is.
func TestWriteCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := testenv.Wide(4, 50, 3000).WriteDir(t)
	fast, store := publish(t, dir)
	gate := &blockingStore{Store: store, entered: make(chan struct{}, 1)}
	tree, err := erisfs.Open(context.Background(), fast.Capability(), gate, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gate.block.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Write(ctx, io.Discard, tree, Options{})
		done <- err
	}()
	select {
	case <-gate.entered:
	case err := <-done:
		t.Fatalf("write ended before any fetch waited: %v", err)
	}
	cancel()
	// Only an upper bound for a hang: a correct write returns at once.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want the cancellation", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("write still running a minute after its context was cancelled")
	}
}

// failingWriter fails after n bytes, like a client that went away.
type failingWriter struct{ n int }

var errGone = errors.New("client went away")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errGone
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriteWriterFails(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tree, _ := publish(t, small().WriteDir(t))
	for _, o := range options {
		_, err := Write(context.Background(), &failingWriter{n: 100 << 10}, tree, o.opts)
		if !errors.Is(err, errGone) {
			t.Errorf("%s: err %v, want the writer's", o.name, err)
		}
	}
}
