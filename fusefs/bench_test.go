package fusefs_test

import (
	"context"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"erismount/cache"
	"erismount/eris"
	"erismount/erisfs"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

var benchSize = flag.Int("fusefs.benchsize", 256<<20, "size of the file BenchmarkRead reads")

// BenchmarkRead reads one large file (-fusefs.benchsize, 256 MiB) through
// the mount and through its baselines, sequentially (1 MiB reads, as dd
// bs=1M) and at random 4 KiB offsets:
//
//   - warm: a new mount over a new memory cache, the blocks in SQLite: every
//     byte is read from SQLite, verified, decrypted and copied to the kernel;
//   - warm-mem: a new mount, every block already in the memory cache: what
//     verifying and decrypting cost without SQLite;
//   - hot: the same mount read again: the kernel's page cache answers;
//   - memfuse: the same bytes from a minimal go-fuse file in memory, new
//     mount each time (the FUSE limit: what any FUSE file system costs);
//   - memfuse-hot: that file read again (page cache);
//   - tmpfs: a file in /dev/shm (no FUSE at all);
//   - cold-coap, cold-tcp: a new mount over an empty cache, every block
//     fetched from a block server over CoAP (UDP, block-wise) or CoAP over
//     TCP on loopback; "amplification" is bytes the server sent per byte
//     read.
//
// Goals (issue 7): warm ≥ 50 % of memfuse, hot within 10 % of memfuse-hot.
func BenchmarkRead(b *testing.B) {
	testenv.RequireFUSE(b)
	ctx := context.Background()
	size := *benchSize
	content := testenv.Random(42, size)

	// The published tree, in an SQLite store.
	srcDir := b.TempDir()
	if err := os.WriteFile(filepath.Join(srcDir, "big"), content, 0o444); err != nil {
		b.Fatal(err)
	}
	storePath := filepath.Join(b.TempDir(), "blocks.sqlite")
	rc := testenv.PublishSQLite(b, srcDir, storePath)
	store := testenv.SQLite(b, storePath)

	// tmpfs.
	shm, err := os.MkdirTemp("/dev/shm", "erismount-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	tmpfsFile := filepath.Join(shm, "big")
	if err := os.WriteFile(tmpfsFile, content, 0o444); err != nil {
		b.Fatal(err)
	}

	// Every store here returns only verified blocks (SQLite hashes what it
	// reads, Tiered what it fetches, Memory holds what they checked), so the
	// trees are opened as erismount mount opens them: without a second hash.
	verifying := erisfs.OpenOptions{GetterVerifies: true}
	// warm mounts a new tree over a new memory cache in front of SQLite.
	warm := func(b *testing.B) string {
		tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(256 << 20), Disk: store})
		b.Cleanup(func() { tiered.Close() })
		tree, err := erisfs.Open(ctx, rc, tiered, verifying)
		if err != nil {
			b.Fatal(err)
		}
		return filepath.Join(testenv.Mount(b, tree, fusefs.Options{}).Dir(), "big")
	}
	// All blocks in memory, for warm-mem.
	mem := cache.NewMemory(int64(size) + int64(size)/16 + 64<<20)
	fill := cache.NewTiered(cache.TieredOptions{Memory: mem, Disk: store})
	if err := eris.Walk(ctx, rc, fill, func(eris.Ref, int) error { return nil }); err != nil {
		b.Fatal(err)
	}
	fillTree, err := erisfs.Open(ctx, rc, fill, erisfs.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fillTree.ReadFile(ctx, fillTree.Root().Child("big")); err != nil {
		b.Fatal(err)
	}
	fill.Close()
	warmMem := func(b *testing.B) string {
		tree, err := erisfs.Open(ctx, rc, mem, verifying)
		if err != nil {
			b.Fatal(err)
		}
		return filepath.Join(testenv.Mount(b, tree, fusefs.Options{}).Dir(), "big")
	}
	memfuse := func(b *testing.B) string { return filepath.Join(mountMemFile(b, content), "big") }
	// cold mounts over an empty cache in front of a block server.
	served := testenv.NewCounting(store)
	cold := func(scheme string) func(*testing.B) string {
		srv := testenv.ServeBlocks(b, served, scheme)
		return func(b *testing.B) string {
			c := testenv.NewCache(b, testenv.Dial(b, srv.URL))
			tree, err := erisfs.Open(ctx, rc, c, verifying)
			if err != nil {
				b.Fatal(err)
			}
			return filepath.Join(testenv.Mount(b, tree, fusefs.Options{}).Dir(), "big")
		}
	}
	// readAll warms the page cache of a mount.
	hot := func(mount func(*testing.B) string) func(*testing.B) string {
		return func(b *testing.B) string {
			path := mount(b)
			seqRead(b, path, int64(size))
			return path
		}
	}
	targets := []struct {
		name  string
		path  func(*testing.B) string
		fresh bool // mount anew for each sequential iteration
	}{
		{"warm", warm, true},
		{"warm-mem", warmMem, true},
		{"hot", hot(warm), false},
		{"memfuse", memfuse, true},
		{"memfuse-hot", hot(memfuse), false},
		{"tmpfs", func(*testing.B) string { return tmpfsFile }, false},
		{"cold-coap", cold("coap"), true},
		{"cold-tcp", cold("coap+tcp"), true},
	}
	for _, tg := range targets {
		b.Run("seq/"+tg.name, func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var path string
			if !tg.fresh {
				path = tg.path(b)
			}
			var sent int64
			b.ResetTimer()
			for range b.N {
				if tg.fresh {
					b.StopTimer()
					path = tg.path(b)
					before := served.Bytes()
					b.StartTimer()
					seqRead(b, path, int64(size))
					sent += served.Bytes() - before
					continue
				}
				seqRead(b, path, int64(size))
			}
			if sent > 0 {
				b.ReportMetric(float64(sent)/float64(int64(b.N)*int64(size)), "amplification")
			}
		})
	}
	for _, tg := range targets {
		b.Run("rand4k/"+tg.name, func(b *testing.B) {
			path := tg.path(b)
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			// No kernel readahead: each read asks for its own page.
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
			r := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 4096)
			pages := int64(size / 4096)
			b.SetBytes(4096)
			b.ReportAllocs()
			before := served.Bytes()
			b.ResetTimer()
			for range b.N {
				if _, err := f.ReadAt(buf, r.Int64N(pages)*4096); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if sent := served.Bytes() - before; sent > 0 {
				b.ReportMetric(float64(sent)/float64(b.N*len(buf)), "amplification")
			}
		})
	}
}

// seqRead reads the file at path from start to end in 1 MiB reads.
func seqRead(b *testing.B, path string, size int64) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if n != size {
		b.Fatalf("read %d bytes of %d", n, size)
	}
}

// memFile is the baseline: a file served from memory by the smallest
// go-fuse node that can, with the page cache kept.
type memFile struct {
	gofs.Inode
	data []byte
}

func (m *memFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (m *memFile) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(len(m.data))
	return 0
}

func (m *memFile) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := min(int64(len(m.data)), off+int64(len(dest)))
	return fuse.ReadResultData(m.data[min(off, end):end]), 0
}

// mountMemFile mounts a directory holding data as "big", with the mount
// options fusefs uses, and unmounts it when b ends.
func mountMemFile(b *testing.B, data []byte) string {
	dir := b.TempDir()
	long := time.Hour
	root := &gofs.Inode{}
	opts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount:  true,
			MaxWrite:     1<<20 - 8<<10,
			MaxReadAhead: 1<<20 - 8<<10,
			Options:      []string{"ro"},
		},
		EntryTimeout: &long,
		AttrTimeout:  &long,
		OnAdd: func(ctx context.Context) {
			child := root.NewPersistentInode(ctx, &memFile{data: data}, gofs.StableAttr{Mode: syscall.S_IFREG})
			root.AddChild("big", child, true)
		},
	}
	srv, err := gofs.Mount(dir, root, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			b.Errorf("unmount: %v", err)
			fusefs.Detach(dir)
		}
	})
	return dir
}
