package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/erisfs"
	"erismount/fetcher"
	"erismount/fusefs"
)

func newDemoCmd(a *app) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A self-contained run: serve a sample tree over CoAP, mount it with an empty cache, read, and show what was fetched",
		Long: `demo runs the whole path on this machine with nothing set up beforehand:

  1. makes a sample tree (a program, docs, 24 MiB of data files, a symlink),
  2. publishes it as ERIS-FS into a block server's own SQLite store and serves
     that store over CoAP (UDP) on 127.0.0.1,
  3. mounts the tree's URN with FUSE over that peer with an empty cache,
  4. lists the tree, reads the README and runs bin/hello from the mount,
  5. prints how many bytes were fetched against the tree's size, and unmounts.

It needs FUSE (/dev/fuse, as root or with fusermount3). Everything lives in a
temporary directory that is removed afterwards (--keep keeps it).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.demo(cmd.Context(), keep)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory (stores, sample tree)")
	return cmd
}

func (a *app) demo(ctx context.Context, keep bool) (err error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("demo needs FUSE: %w (load the fuse module or run where /dev/fuse exists)", err)
	}
	tmp, err := os.MkdirTemp("", "erismount-demo-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Fprintf(a.stdout, "working in %s (kept)\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	say := func(format string, args ...any) { fmt.Fprintf(a.stdout, format+"\n", args...) }

	// 1. The sample tree.
	sample := filepath.Join(tmp, "sample")
	size, files, err := writeSample(sample)
	if err != nil {
		return err
	}
	say("1. sample tree: %d files, %s", files, formatBytes(size))

	// 2. Publish into the server's store and serve it over CoAP.
	serverStore, err := cache.OpenSQLite(filepath.Join(tmp, "server.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited, Logger: a.log})
	if err != nil {
		return err
	}
	defer serverStore.Close()
	rc, st, err := erisfs.EncodeDir(ctx, sample, serverStore, erisfs.EncodeOptions{Logger: a.log})
	if err != nil {
		return err
	}
	if err := serverStore.Flush(ctx); err != nil {
		return err
	}
	srv := fetcher.NewServer(serverStore, fetcher.ServerOptions{Logger: a.log})
	defer srv.Close()
	peer, err := srv.Listen(ctx, "coap://127.0.0.1:0")
	if err != nil {
		return err
	}
	say("2. published %s\n   (%d blocks, %d identical files shared) and serving it at %s", rc.URN(), st.Blocks, st.DedupFiles, peer)

	// 3. Mount over that peer with an empty cache.
	cacheStore, err := cache.OpenSQLite(filepath.Join(tmp, "cache.sqlite"), cache.SQLiteOptions{Logger: a.log})
	if err != nil {
		return err
	}
	defer cacheStore.Close()
	p, err := fetcher.Dial(ctx, peer, fetcher.ClientOptions{Logger: a.log})
	if err != nil {
		return err
	}
	pool := fetcher.NewPool([]fetcher.Peer{p}, fetcher.PoolOptions{Logger: a.log})
	defer pool.Close()
	tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Disk: cacheStore, Remote: pool, Logger: a.log})
	defer tiered.Close()
	start := time.Now()
	tree, err := erisfs.Open(ctx, rc, tiered, erisfs.OpenOptions{GetterVerifies: true})
	if err != nil {
		return err
	}
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return err
	}
	fsrv, err := fusefs.Mount(ctx, mnt, tree, fusefs.Options{Local: cacheStore, Logger: a.log})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, fsrv.Close()) }()
	say("3. mounted at %s with an empty cache (%s)", mnt, time.Since(start).Round(time.Millisecond))

	// 4. List, read, run.
	fetched := func() (n int64) {
		for _, s := range pool.Stats() {
			n += int64(s.Bytes)
		}
		return n
	}
	var listed, dirs int
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		listed++
		if d.IsDir() {
			dirs++
		}
		if rel, _ := filepath.Rel(mnt, p); listed <= 8 && rel != "." {
			info, _ := d.Info()
			say("   %-11s %8d  %s", info.Mode(), info.Size(), rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	say("4. listed %d entries (%d directories) — fetched so far: %s", listed, dirs, formatBytes(fetched()))
	readme, err := os.ReadFile(filepath.Join(mnt, "share/doc/README"))
	if err != nil {
		return err
	}
	say("   README: %q", firstLine(string(readme)))
	// Through a shell: this process serves the mount, and a forked child
	// of a Go process that opens a file of its parent's own FUSE mount
	// between fork and exec can deadlock the parent (golang/go#11155).
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", `exec "$0"`, filepath.Join(mnt, "bin/hello")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("run bin/hello from the mount: %w: %s", err, out)
	}
	say("   bin/hello says: %q", strings.TrimSpace(string(out)))

	// 5. What it cost.
	f := fetched()
	say("5. fetched %s of a %s tree (%.2f%%) from the peer; %d FUSE reads served %s",
		formatBytes(f), formatBytes(size), 100*float64(f)/float64(max(size, 1)), fsrv.Stats().Reads, formatBytes(fsrv.Stats().ReadBytes))
	say("   unmounting")
	return nil
}

// writeSample writes the demo's tree: a program, documentation, data
// files that are never read (so laziness shows), a duplicate and a symlink.
func writeSample(dir string) (size int64, files int, err error) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return string(b)
	}
	tree := map[string]string{
		"bin/hello":           "#!/bin/sh\necho \"hello from a lazily fetched, verified tree\"\n",
		"share/doc/README":    "erismount demo tree: only what you read is fetched.\n" + strings.Repeat("More documentation.\n", 200),
		"share/doc/COPYING":   "Public domain.\n",
		"share/licenses/COPY": "Public domain.\n",
	}
	for i := range 48 {
		tree[fmt.Sprintf("share/data/blob%02d.bin", i)] = data(512 << 10)
	}
	for p, content := range tree {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return 0, 0, err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(p, "bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			return 0, 0, err
		}
		size += int64(len(content))
		files++
	}
	if err := os.Symlink("../share/doc/README", filepath.Join(dir, "bin/README")); err != nil {
		return 0, 0, err
	}
	return size, files + 1, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
