package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"erismount/cache"
	"erismount/fetcher"
	"erismount/fusefs"
	"erismount/narinfo"
	narsource "erismount/narinfo/source"
)

// storeFlags are the flags of the store view, shared by store and run.
type storeFlags struct {
	narinfoDir   string
	upstreams    []string
	narinfoCache string
	storeDir     string
	aclPath      string
	trustedNix   []string
	trustDir     bool
	deadline     time.Duration
	allowOther   bool
	readahead    int
	treeAhead    int
	maxItems     int
	negativeTTL  time.Duration
	debug        bool
}

// add adds the flags to fl; storeDirDefault is the default of --store-dir.
func (f *storeFlags) add(fl *pflag.FlagSet, storeDirDefault, storeDirHelp string) {
	fl.StringVar(&f.narinfoDir, "narinfo-dir", "", "directory of signed narinfos, <hash>.narinfo (as publish --narinfo-dir writes them); asked first")
	fl.StringArrayVar(&f.upstreams, "upstream", nil, "substitute server to look narinfos up at, http(s)://… (repeatable, asked in order, after --narinfo-dir)")
	fl.StringVar(&f.narinfoCache, "narinfo-cache", "", "SQLite file remembering the upstreams' answers (default narinfo.sqlite beside the block cache)")
	fl.StringVar(&f.storeDir, "store-dir", storeDirDefault, storeDirHelp)
	fl.StringVar(&f.aclPath, "acl", "", "trust narinfos signed by a key of this Guix ACL (e.g. /etc/guix/acl)")
	fl.StringArrayVar(&f.trustedNix, "trusted-nix-key", nil, "trust narinfos with a Sig by this Nix public key NAME:BASE64 (repeatable)")
	fl.BoolVar(&f.trustDir, "trust-narinfo-dir", false, "trust every narinfo of --narinfo-dir without checking its signatures")
	fl.DurationVar(&f.deadline, "deadline", fusefs.DefaultDeadline, "longest wait for the blocks of one file operation; past it the operation fails with EIO")
	fl.IntVar(&f.readahead, "readahead", fusefs.DefaultReadahead, "bytes to fetch ahead of a sequential reader of a file (0 turns it off)")
	fl.IntVar(&f.treeAhead, "tree-ahead", fusefs.DefaultTreeAhead, "bytes of the following files to fetch ahead of a reader that goes through an item in order; executables up to a quarter of it are fetched whole when opened (0 turns both off)")
	fl.IntVar(&f.maxItems, "max-items", fusefs.DefaultMaxItems, "most store items held at once; beyond it the least recently looked up are forgotten")
	fl.DurationVar(&f.negativeTTL, "negative-ttl", fusefs.DefaultNegativeTTL, "how long an unknown or untrusted name is remembered as such")
	fl.BoolVar(&f.debug, "debug-fuse", false, "log every FUSE request (with -v)")
}

func newStoreCmd(a *app) *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "store DIR (--narinfo-dir NARINFOS | --upstream URL…) (--acl FILE | --trusted-nix-key KEY | --trust-narinfo-dir)",
		Short: "Mount every signed store item as a lazy, verified store at DIR",
		Long: `Mount at DIR (an existing, empty directory) a read-only view of a whole Guix or
Nix store: every store item whose signed narinfo carries an ERIS field.
Looking up DIR/<hash>-<name> reads <hash>.narinfo — from --narinfo-dir, else
from the --upstream substitute servers in order (their answers, found or not,
kept in --narinfo-cache) — checks its signature (--acl: a Guix signature by a
key of the ACL; --trusted-nix-key: a Nix Sig by that key), that its StorePath
is exactly --store-dir/<hash>-<name>, and shows the item's ERIS-FS tree there. Blocks are fetched only as they are read —
from the block store (--store) or the peers (--peer) — and each is verified,
as with mount.

"ls DIR" lists the items of --narinfo-dir that can be shown, and those held
(looked up and not yet forgotten); upstreams are not listed. Any other name is "No such file or directory": unknown, not
trusted, a narinfo for another path, or a narinfo without an ERIS field
(-v logs which). Such answers are remembered for --negative-ttl.

Items are opened on their first lookup and forgotten when the kernel forgets
them; at most --max-items are held at once.

It runs in the foreground until SIGINT or SIGTERM, then unmounts. To run a
program from such a store without mounting it over the real one, see
"erismount run".`,
		Example: `  erismount store /mnt/store --store-dir /nix/store --narinfo-dir ./narinfo \
      --trusted-nix-key publisher-1:… --peer coap://192.0.2.7:5683
  erismount store /mnt/gnu --upstream https://ci.guix.gnu.org --acl /etc/guix/acl \
      --peer coap://192.0.2.7:5683
  ls /mnt/store; cat /mnt/store/…-hello-2.12/share/doc/README`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if fi, err := os.Stat(args[0]); err != nil || !fi.IsDir() {
				return usageError{fmt.Errorf("mount point %s: not an existing directory (mkdir -p %s)", args[0], args[0])}
			}
			view, err := a.mountStoreView(ctx, args[0], f)
			if err != nil {
				return err
			}
			defer view.close()
			if a.metrics != "" {
				ms := &metricSources{tiered: view.src.Tiered.Stats, fuse: view.Stats}
				if pool, ok := view.src.Remote.(*fetcher.Pool); ok {
					ms.peers = pool.Stats
				}
				if _, err := a.serveMetrics(ctx, a.metrics, ms); err != nil {
					return err
				}
			}
			if a.json {
				if err := a.printJSON(map[string]any{"dir": view.Dir(), "store_dir": f.storeDir, "pid": os.Getpid()}); err != nil {
					return err
				}
			}
			select {
			case <-ctx.Done():
				a.log.Info("unmounting", "dir", view.Dir())
			case <-view.Done():
				a.log.Info("unmounted from outside", "dir", view.Dir())
			}
			st := view.StoreStats()
			a.log.Info("store view ended", "items_built", st.Built, "negative", st.Negative, "failed", st.Failed, "evicted", st.Evicted)
			return nil
		},
	}
	f.add(cmd.Flags(), "/gnu/store", "store directory the view stands for: /gnu/store (Guix) or /nix/store (Nix)")
	cmd.Flags().BoolVar(&f.allowOther, "allow-other", false, "let other users see the store (non-root users need user_allow_other in /etc/fuse.conf)")
	a.addMetricsFlag(cmd)
	return cmd
}

// storeView is a mounted store view and what it reads from.
type storeView struct {
	*fusefs.Store
	src     *source
	lookups func() error // closes the narinfo lookup
}

// close unmounts the view (lazily if files are open) and closes its
// sources.
func (v *storeView) close() error {
	return errors.Join(v.Close(), v.src.Close(), v.lookups())
}

// mountStoreView checks the flags, opens the block source and the narinfo
// lookup, and mounts the view at dir.
func (a *app) mountStoreView(ctx context.Context, dir string, f storeFlags) (*storeView, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.readahead == 0 {
		f.readahead = -1 // fusefs: negative is off, 0 the default
	}
	if f.treeAhead == 0 {
		f.treeAhead = -1
	}
	lookup, closeLookup, err := a.narinfoLookup(ctx, f)
	if err != nil {
		return nil, err
	}
	src, err := a.openSource(ctx)
	if err != nil {
		closeLookup()
		return nil, err
	}
	st, err := fusefs.MountStore(ctx, dir, fusefs.StoreOptions{
		Options: fusefs.Options{
			Deadline:   f.deadline,
			Local:      src.Store,
			Readahead:  f.readahead,
			TreeAhead:  f.treeAhead,
			AllowOther: f.allowOther,
			Logger:     a.log,
			Debug:      f.debug,
		},
		StoreDir:       f.storeDir,
		Narinfos:       lookup,
		Blocks:         src,
		GetterVerifies: true,
		MaxItems:       f.maxItems,
		NegativeTTL:    f.negativeTTL,
	})
	if err != nil {
		src.Close()
		closeLookup()
		return nil, err
	}
	a.log.Info("store view mounted", "dir", st.Dir(), "store_dir", f.storeDir, "narinfo_dir", f.narinfoDir, "upstreams", f.upstreams)
	return &storeView{Store: st, src: src, lookups: closeLookup}, nil
}

// check checks the flags that need no file opened.
func (f storeFlags) check() error {
	if _, _, err := narinfo.SplitStorePath(f.storeDir + "/00000000000000000000000000000000-x"); err != nil {
		return usageError{fmt.Errorf("--store-dir %q: want an absolute, clean directory such as /gnu/store", f.storeDir)}
	}
	if f.narinfoDir == "" && len(f.upstreams) == 0 {
		return usageError{errors.New("say where narinfos come from: --narinfo-dir and/or --upstream")}
	}
	if f.narinfoDir != "" {
		if fi, err := os.Stat(f.narinfoDir); err != nil || !fi.IsDir() {
			return usageError{fmt.Errorf("--narinfo-dir %s: not a directory (%v)", f.narinfoDir, err)}
		}
	}
	if f.deadline <= 0 {
		return usageError{fmt.Errorf("--deadline %v: want a positive duration", f.deadline)}
	}
	if _, err := readTrust(f.aclPath, f.trustedNix, f.trustDir); err != nil {
		return err
	}
	if len(f.upstreams) > 0 && f.aclPath == "" && len(f.trustedNix) == 0 {
		return usageError{errors.New("--upstream: say which keys to trust with --acl or --trusted-nix-key (--trust-narinfo-dir trusts only --narinfo-dir)")}
	}
	return nil
}

// narinfoLookup builds the narinfo lookup from the flags: --narinfo-dir
// first, then the upstreams in order behind a cache of their answers. The
// function returned closes it.
func (a *app) narinfoLookup(ctx context.Context, f storeFlags) (fusefs.NarinfoLookup, func() error, error) {
	trust, err := readTrust(f.aclPath, f.trustedNix, f.trustDir)
	if err != nil {
		return nil, nil, err
	}
	signed := narsource.Trust{ACL: trust.ACL, NixKeys: trust.NixKeys}
	var chain narsource.Chain
	if f.narinfoDir != "" {
		dirTrust := signed
		dirTrust.Any = f.trustDir
		d, err := narsource.NewDir(f.narinfoDir, narsource.Options{StoreDir: f.storeDir, Trust: dirTrust})
		if err != nil {
			return nil, nil, usageError{err}
		}
		chain = append(chain, d)
	}
	closeAll := func() error { return nil }
	var cached *narsource.Cache
	if len(f.upstreams) > 0 {
		var ups narsource.Chain
		for _, u := range f.upstreams {
			h, err := narsource.NewHTTP(u, narsource.Options{StoreDir: f.storeDir, Trust: signed})
			if err != nil {
				return nil, nil, usageError{fmt.Errorf("--upstream: %w", err)}
			}
			ups = append(ups, h)
			// Read its /nix-cache-info now, not before the first lookup:
			// the first item then waits for one round trip, not three.
			go h.CacheInfo(ctx)
		}
		path := f.narinfoCache
		if path == "" {
			blocks := a.storePath
			if blocks == "" {
				if blocks, err = cache.DefaultPath(); err != nil {
					return nil, nil, err
				}
			}
			path = filepath.Join(filepath.Dir(blocks), "narinfo.sqlite")
		}
		c, err := narsource.OpenCache(path, ups, narsource.CacheOptions{
			NegativeTTL: f.negativeTTL,
			Scope:       strings.Join(f.upstreams, " "),
			StoreDir:    f.storeDir,
			Trust:       signed,
			Logger:      a.log,
		})
		if err != nil {
			return nil, nil, err
		}
		chain = append(chain, c)
		cached, closeAll = c, c.Close
	}
	return listedLookup{NarinfoLookup: chain, dir: f.narinfoDir, cache: cached}, closeAll, nil
}

// listedLookup is a narinfo lookup that lists, for the store view's
// listing, what is known locally: the narinfos of a directory and those the
// narinfo cache holds (either may be absent).
type listedLookup struct {
	fusefs.NarinfoLookup
	dir   string
	cache *narsource.Cache
}

var _ fusefs.NarinfoLister = listedLookup{}

// HashParts lists the hash parts of the directory's narinfos, then those
// of the cache's live entries.
func (l listedLookup) HashParts(ctx context.Context) ([]string, error) {
	var hashes []string
	if l.dir != "" {
		ents, err := os.ReadDir(l.dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			hash, ok := strings.CutSuffix(e.Name(), ".narinfo")
			if ok && len(hash) == 32 && narinfo.CheckBaseName(hash+"-x") == nil && e.Type().IsRegular() {
				hashes = append(hashes, hash)
			}
		}
	}
	if l.cache != nil {
		cached, err := l.cache.HashParts(ctx)
		if err != nil {
			return hashes, err
		}
		hashes = append(hashes, cached...)
	}
	return hashes, nil
}

// storeDirOf returns the store directory of an absolute path into a store
// item, /nix/store of /nix/store/<hash>-<name>/bin/prog, and the item's
// base name.
func storeDirOf(p string) (dir, base string, err error) {
	if !filepath.IsAbs(p) {
		return "", "", fmt.Errorf("%s: want an absolute path into a store item, e.g. /nix/store/<hash>-<name>/bin/prog", p)
	}
	// The shallowest prefix that is a store path: /nix/store/<hash>-x,
	// whatever its files are called.
	parts := strings.Split(filepath.Clean(p), "/")
	for i := 2; i < len(parts); i++ {
		if dir, base, err := narinfo.SplitStorePath(strings.Join(parts[:i+1], "/")); err == nil {
			return dir, base, nil
		}
	}
	return "", "", fmt.Errorf("%s: not a path into a store item (<store dir>/<32-character hash>-<name>/…)", p)
}
