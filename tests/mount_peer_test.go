package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

// served is a tree published into one store and served from it by a
// block server, and mounted elsewhere with an empty cache that fetches
// from that server: the path of a real mount, in one process.
type served struct {
	src    string
	spec   testenv.Spec
	rc     eris.ReadCapability
	origin *eristest.Store
	count  *testenv.Counting // what the peer served
	faulty *testenv.Faulty   // between the peer and its store
	server *testenv.BlockServer
	cache  *testenv.Cache
	tree   *erisfs.Tree
	mount  *fusefs.Server
}

func serve(t *testing.T, spec testenv.Spec, scheme string, opts fusefs.Options) *served {
	t.Helper()
	testenv.RequireFUSE(t)
	s := &served{spec: spec, src: spec.WriteDir(t), origin: eristest.NewStore()}
	s.rc = testenv.Publish(t, s.src, s.origin)
	s.count = testenv.NewCounting(s.origin)
	s.faulty = testenv.NewFaulty(s.count)
	t.Cleanup(s.faulty.Release)
	s.server = testenv.ServeBlocks(t, s.faulty, scheme)
	s.cache = testenv.NewCache(t, testenv.Dial(t, s.server.URL))
	s.tree = testenv.OpenTree(t, s.rc, s.cache)
	opts.Local = s.cache.Disk
	s.mount = testenv.Mount(t, s.tree, opts)
	return s
}

// TestMountOverPeer: a tree served over each transport and mounted with
// an empty cache equals its source — every file, mode and symlink byte
// for byte, io/fs's contract, programs that run — and once read it is all
// in the local store.
func TestMountOverPeer(t *testing.T) {
	for _, scheme := range []string{"coap", "coap+tcp", "coap+unix", "http"} {
		t.Run(scheme, func(t *testing.T) {
			spec := testenv.Sample()
			spec["bin/echo"] = testenv.HostBinary(t, "echo")
			s := serve(t, spec, scheme, fusefs.Options{})
			dir := s.mount.Dir()
			testenv.CompareDirs(t, s.src, dir)
			if scheme == "coap" {
				// io/fs's contract, where every symlink resolves inside
				// the tree and files are small (fstest reads them a byte
				// at a time).
				for _, sub := range []string{"bin", "share", "lib"} {
					var expected []string
					for _, p := range spec.Paths() {
						if rest, ok := strings.CutPrefix(p, sub+"/"); ok {
							expected = append(expected, rest)
						}
					}
					if err := fstest.TestFS(os.DirFS(filepath.Join(dir, sub)), expected...); err != nil {
						t.Errorf("%s: %v", sub, err)
					}
				}
			}
			for cmd, want := range map[string]string{
				"bin/hello over " + scheme: "hello from eris over " + scheme + "\n",
				"bin/echo ELF":             "ELF\n",
			} {
				out, err := exec.Command("sh", "-c", filepath.Join(dir, cmd)).CombinedOutput()
				if err != nil || string(out) != want {
					t.Errorf("%s: %q, %v; want %q", cmd, out, err, want)
				}
			}
			// Everything read is now in the local store.
			if err := s.cache.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 256)
			n, err := unix.Getxattr(dir, fusefs.XattrLocal, buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), "1.0000 ") {
				t.Errorf("user.eris.local of the root after reading everything: %q, %v", buf[:n], err)
			}
			t.Logf("%s: the peer served %d blocks, %d bytes, for %d bytes of files", scheme, s.count.Blocks(), s.count.Bytes(), spec.Bytes())
		})
	}
}

// TestMountOverPeerLazy: reading one small file of a tree of a thousand
// fetches from the peer the index and that file's blocks, nothing else;
// the read amplification is logged. Reading it again through a new mount
// over the same cache fetches nothing.
func TestMountOverPeerLazy(t *testing.T) {
	ctx := context.Background()
	spec := testenv.Wide(10, 100, 3000)
	s := serve(t, spec, "coap", fusefs.Options{})
	index, err := testenv.ContentRefs(ctx, s.rc, s.origin)
	if err != nil {
		t.Fatal(err)
	}
	const name = "d007/f0013"
	e, _ := s.tree.Lookup(name)
	fileRefs, err := testenv.ContentRefs(ctx, e.Capability(), s.origin)
	if err != nil {
		t.Fatal(err)
	}
	indexBytes, indexBlocks := s.count.Bytes(), s.count.Blocks()
	got, err := os.ReadFile(filepath.Join(s.mount.Dir(), name))
	if err != nil || !bytes.Equal(got, spec[name].Content) {
		t.Fatalf("read %s: %d bytes, %v", name, len(got), err)
	}
	served := s.count.Refs()
	for ref := range served {
		if !index[ref] && !fileRefs[ref] {
			t.Errorf("the peer served block %s, neither the index's nor %s's", ref.Str(), name)
		}
	}
	for ref, n := range served {
		if n > 1 {
			t.Errorf("the peer served block %s %d times (the cache should have kept it)", ref.Str(), n)
		}
	}
	fileBytes := s.count.Bytes() - indexBytes
	t.Logf("tree: %d files, %d bytes; index %d bytes in %d blocks", len(spec), spec.Bytes(), s.tree.IndexSize(), indexBlocks)
	t.Logf("read %s (%d bytes): the peer served %d bytes in %d blocks for it; amplification %.2f (%.2f counting the index)",
		name, len(got), fileBytes, s.count.Blocks()-indexBlocks, float64(fileBytes)/float64(len(got)), float64(s.count.Bytes())/float64(len(got)))

	// A new mount over the same cache: the peer is not asked again.
	s.count.Reset()
	tree := testenv.OpenTree(t, s.rc, s.cache)
	again := testenv.Mount(t, tree, fusefs.Options{})
	if got, err := os.ReadFile(filepath.Join(again.Dir(), name)); err != nil || !bytes.Equal(got, spec[name].Content) {
		t.Fatalf("second read: %v", err)
	}
	if s.count.Blocks() != 0 {
		t.Errorf("reading it again from the cache asked the peer for %d blocks", s.count.Blocks())
	}
}

// TestMountPeerDies: the only peer — a server in a process of its own —
// is killed while a read waits for its blocks; the reader gets EIO close
// to the deadline (not a hang), what was read before still reads from the
// cache, and the mount unmounts at the end of the test.
func TestMountPeerDies(t *testing.T) {
	for _, scheme := range []string{"coap", "coap+tcp"} {
		t.Run(scheme, func(t *testing.T) {
			testenv.RequireFUSE(t)
			const deadline = 2 * time.Second
			spec := testenv.Spec{"big": testenv.Bytes(testenv.Random(5, 8<<20)), "small": testenv.File("read before")}
			src := spec.WriteDir(t)
			store := filepath.Join(t.TempDir(), "origin.sqlite")
			rc := testenv.PublishSQLite(t, src, store)
			// The peer answers 64 gets (the index, small, part of big) and
			// then no more: big's read is in flight when the peer dies.
			peer := testenv.ServeProcess(t, store, scheme, 64)
			c := testenv.NewCache(t, testenv.Dial(t, peer.URL))
			dir := testenv.Mount(t, testenv.OpenTree(t, rc, c), fusefs.Options{Deadline: deadline}).Dir()
			if got, err := os.ReadFile(filepath.Join(dir, "small")); err != nil || string(got) != "read before" {
				t.Fatalf("small: %q, %v", got, err)
			}
			type result struct {
				n    int
				err  error
				took time.Duration
			}
			done := make(chan result, 1)
			go func() {
				start := time.Now()
				b, err := os.ReadFile(filepath.Join(dir, "big"))
				done <- result{len(b), err, time.Since(start)}
			}()
			select {
			case <-peer.Stalled():
			case r := <-done:
				t.Fatalf("big read whole (%d bytes, %v) from a peer that stops after 64 blocks", r.n, r.err)
			}
			killed := time.Now()
			peer.Kill()
			var r result
			select {
			case r = <-done:
			case <-time.After(deadline + time.Minute):
				t.Fatal("the read is still blocked a minute past its deadline")
			}
			t.Logf("%s: read of big: %d bytes, %v after %v, %v after the kill (deadline %v)", scheme, r.n, r.err, r.took, time.Since(killed), deadline)
			if !errors.Is(r.err, syscall.EIO) {
				t.Errorf("read from a killed peer: %d bytes, %v; want EIO", r.n, r.err)
			}
			// A hang check, not a timing threshold: the reader must get
			// its answer near the deadline, not when the peer returns.
			if after := time.Since(killed); after > deadline+5*time.Second {
				t.Errorf("EIO came %v after the kill; deadline %v", after, deadline)
			}
			// What was fetched before is served from the cache, offline.
			if got, err := os.ReadFile(filepath.Join(dir, "small")); err != nil || string(got) != "read before" {
				t.Errorf("small, offline: %q, %v", got, err)
			}
		})
	}
}

// TestMountCorruptPeer: a peer that flips bits in every block never gets
// a wrong byte to a reader or into the cache: reads of content it serves
// fail with EIO, and what the cache held from before still reads.
func TestMountCorruptPeer(t *testing.T) {
	ctx := context.Background()
	s := serve(t, testenv.Sample(), "coap", fusefs.Options{})
	dir := s.mount.Dir()
	// Lookups first, from an honest peer (a file's size comes from its
	// last block, which the cache then holds), and one file read whole.
	for _, p := range s.spec.Paths() {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	const before = "data/size-00102400" // 100 KiB
	want := s.spec[before].Content
	if got, err := os.ReadFile(filepath.Join(dir, before)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: %v", before, err)
	}
	s.faulty.Set(testenv.Corrupt)
	for _, p := range s.spec.Paths() {
		n := s.spec[p]
		if !n.Kind.IsFile() || p == before {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err == nil && !bytes.Equal(got, n.Content) {
			t.Fatalf("%s: a corrupting peer got wrong bytes to the reader", p)
		}
		// Content of one block came whole with its size, and so did a
		// small file (1 KiB blocks, one level: fetched whole when looked
		// up); the others need blocks only the corrupting peer has.
		e, _ := s.tree.Lookup(p)
		rc := e.Capability()
		small := rc.BlockSize() == eris.BlockSize1K && rc.Level() <= 1
		if small && err != nil {
			t.Errorf("%s, a small file fetched whole when looked up: %v", p, err)
		}
		if rc.Level() > 0 && !small && !errors.Is(err, syscall.EIO) {
			t.Errorf("%s from a corrupting peer: %v, want EIO", p, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, before)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s, read before the peer turned: %v", before, err)
	}
	if err := s.cache.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.cache.Disk.Check(ctx)
	if err != nil || res.Damaged != 0 || res.Missing != 0 {
		t.Errorf("local store after a corrupting peer: %+v, %v", res, err)
	}
	t.Logf("local store: %+v; tiered: %+v", res, s.cache.Stats())
}

// TestCLIMountOverPeer: `erismount URN DIR --peer coap://…` with an empty
// store fetches only what is read — a counting peer proves it — then
// serves the whole tree as published, and unmounts cleanly on SIGINT.
func TestCLIMountOverPeer(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	spec := testenv.Sample()
	for path, n := range testenv.Wide(4, 50, 2000) {
		spec["wide/"+path] = n
	}
	src := spec.WriteDir(t)
	origin := eristest.NewStore()
	rc := testenv.Publish(t, src, origin)
	count := testenv.NewCounting(origin)
	server := testenv.ServeBlocks(t, count, "coap")
	dir := t.TempDir()
	p := testenv.Start(t, rc.URN(), dir, "--peer", server.URL, "--store", filepath.Join(t.TempDir(), "cache.sqlite"))
	testenv.WaitMounted(t, p, dir, mountTimeout)

	index, err := testenv.ContentRefs(ctx, rc, origin)
	if err != nil {
		t.Fatal(err)
	}
	tree := testenv.OpenTree(t, rc, origin)
	const name = "wide/d002/f0031"
	e, _ := tree.Lookup(name)
	fileRefs, err := testenv.ContentRefs(ctx, e.Capability(), origin)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(got, spec[name].Content) {
		t.Fatalf("read %s: %v", name, err)
	}
	for ref := range count.Refs() {
		if !index[ref] && !fileRefs[ref] {
			t.Errorf("the peer served block %s, neither the index's nor %s's", ref.Str(), name)
		}
	}
	t.Logf("reading %s (%d bytes) of a %d-byte tree: the peer served %d bytes in %d blocks, index included",
		name, len(spec[name].Content), spec.Bytes(), count.Bytes(), count.Blocks())

	testenv.CompareDirs(t, src, dir)
	if out, err := exec.Command("sh", "-c", filepath.Join(dir, "bin/hello")+" cli").CombinedOutput(); err != nil || string(out) != "hello from eris cli\n" {
		t.Errorf("bin/hello: %q, %v", out, err)
	}
	p.Interrupt(t, dir)
}

// TestCLIPeerDies: the only peer's process is killed while the mounted
// tree is being read: the reader gets EIO near --deadline, and SIGINT
// still unmounts it cleanly.
func TestCLIPeerDies(t *testing.T) {
	testenv.RequireFUSE(t)
	const deadline = 2 * time.Second
	spec := testenv.Spec{"big": testenv.Bytes(testenv.Random(9, 8<<20))}
	src := spec.WriteDir(t)
	origin := filepath.Join(t.TempDir(), "origin.sqlite")
	rc := testenv.PublishSQLite(t, src, origin)
	peer := testenv.ServeProcess(t, origin, "coap", 64) // then stalls: the read is in flight at the kill
	dir := t.TempDir()
	p := testenv.Start(t, rc.URN(), dir, "--peer", peer.URL, "--store", filepath.Join(t.TempDir(), "cache.sqlite"), "--deadline", deadline.String())
	testenv.WaitMounted(t, p, dir, mountTimeout)

	done := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(filepath.Join(dir, "big"))
		done <- err
	}()
	select {
	case <-peer.Stalled():
	case err := <-done:
		t.Fatalf("big read whole (%v) from a peer that stops after 64 blocks", err)
	}
	killed := time.Now()
	peer.Kill()
	select {
	case err := <-done:
		t.Logf("read: %v, %v after the kill (deadline %v)", err, time.Since(killed), deadline)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read from a killed peer: %v, want EIO", err)
		}
	case <-time.After(deadline + time.Minute):
		t.Fatal("the read is still blocked a minute past its deadline")
	}
	p.Interrupt(t, dir)
}
