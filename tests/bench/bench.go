package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"erismount/cache"
	"erismount/erisfs"
	"erismount/fetcher"
)

// Config is one benchmark: the tree, the link, and how often to measure.
type Config struct {
	Files int   // files in the generated tree
	Bytes int64 // content bytes of the generated tree
	Seed  uint64
	Shape Shape
	Runs  int // repetitions; the table shows medians
	// Transports are the CoAP schemes the lazy side is measured over:
	// "coap" (UDP) and "coap+tcp".
	Transports []string
	Readers    int // concurrent readers of "read everything (N readers)"
	// Ops are the keys of the operations to measure (see Ops); none
	// means all.
	Ops []string
	// OpTimeout stops a lazy operation that takes longer (recorded as
	// such); 0 means none.
	OpTimeout time.Duration
	// Erismount is the erismount binary; "" builds it from this module.
	Erismount string
	MountArgs []string // extra flags for erismount mount
	// DropCaches drops the kernel's caches before each cold and warm
	// measurement (needs root).
	DropCaches bool
	WorkDir    string // where the work directory is made; "" is os.TempDir
	// MountLogs, if set, is a directory where each mount's log (-v) is
	// kept; the mounts then run in the foreground (see Erismount.LogDir).
	MountLogs string
	Keep      bool // keep the work directory
	Logger    *slog.Logger
}

// Results are every sample of one benchmark and what it ran on.
type Results struct {
	Config  Config
	Ops     []Op
	Tree    *Tree
	Encode  erisfs.EncodeStats
	NarSize int64
	// Per operation, one sample per run: whole nar (fetch + unpack, then
	// the operation on the unpacked tree); the operation again on it
	// (local disk, page cache warm).
	Nar, Local []Cell
	// Per transport and operation: lazy cold (empty block store, fresh
	// mount; mount time included) and the bytes that crossed the shaped
	// link towards the client meanwhile (CoAP, UDP and IP headers
	// included). The server's own block cache makes the blocks it read
	// from its store no measure of what a client fetched.
	Cold map[string][]Cell
	Wire map[string][][]int64
	// Per operation: warm (blocks in SQLite, a fresh mount; mount
	// included) and hot (the same mount again), after the first cold run
	// that succeeded.
	Warm, Hot []Cell
	Dropped   int64 // datagrams the shaped links dropped

	DropCaches string // "yes", or why not
	LoadBefore string // /proc/loadavg at the start
	LoadAfter  string // and at the end
	Elapsed    time.Duration
}

// Run runs the benchmark and returns its samples.
func Run(ctx context.Context, cfg Config) (res *Results, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Runs < 1 {
		cfg.Runs = 1
	}
	if cfg.Readers < 1 {
		cfg.Readers = 16
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = []string{"coap"}
	}
	start := time.Now()
	res = &Results{
		Config: cfg, LoadBefore: loadavg(),
		Cold: map[string][]Cell{}, Wire: map[string][][]int64{},
	}
	if err := becomeSubreaper(); err != nil {
		return nil, fmt.Errorf("become a child subreaper: %w", err)
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "erismount-bench-")
	if err != nil {
		return nil, err
	}
	if cfg.Keep {
		log.Info("work directory kept", "dir", work)
	} else {
		defer os.RemoveAll(work)
	}

	goBin, _ := exec.LookPath("go")
	log.Info("generating the tree", "files", cfg.Files, "bytes", cfg.Bytes)
	tree, err := GenerateTree(ctx, filepath.Join(work, "tree"), cfg.Files, cfg.Bytes, cfg.Seed, goBin)
	if err != nil {
		return nil, fmt.Errorf("generate the tree: %w", err)
	}
	res.Tree = tree

	// The block server: the tree published into its own SQLite store,
	// served over each transport behind a shaped link.
	store, err := cache.OpenSQLite(filepath.Join(work, "server.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited, Logger: log})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	log.Info("publishing the tree")
	rc, st, err := erisfs.EncodeDir(ctx, tree.Dir, store, erisfs.EncodeOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("publish the tree: %w", err)
	}
	if err := store.Flush(ctx); err != nil {
		return nil, err
	}
	res.Encode = st
	srv := fetcher.NewServer(store, fetcher.ServerOptions{Logger: log})
	defer srv.Close()
	peers := make(map[string]string)
	proxies := make(map[string]*Proxy)
	for _, tr := range cfg.Transports {
		u, err := srv.Listen(ctx, tr+"://127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		p, err := shapeURL(u, cfg.Shape)
		if err != nil {
			return nil, err
		}
		defer p.Close()
		proxies[tr] = p
		peers[tr] = tr + "://" + p.Addr
	}

	// The whole-nar baseline: the same tree as a nar over HTTP behind the
	// same shaped link.
	narPath := filepath.Join(work, "tree.nar")
	sum, err := WriteNar(ctx, tree.Dir, narPath)
	if err != nil {
		return nil, fmt.Errorf("write the nar: %w", err)
	}
	res.NarSize = sum.Size
	ns, err := ServeNar(narPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	narProxy, err := shapeURL(ns.URL, cfg.Shape)
	if err != nil {
		return nil, err
	}
	defer narProxy.Close()
	narURL := strings.Replace(ns.URL, hostOf(ns.URL), narProxy.Addr, 1)

	em := &Erismount{Bin: cfg.Erismount, MountArgs: cfg.MountArgs, LogDir: cfg.MountLogs}
	if em.Bin == "" {
		em.Bin = filepath.Join(work, "erismount")
		log.Info("building erismount")
		if out, err := exec.CommandContext(ctx, goBin, "build", "-o", em.Bin, "erismount/cmd/erismount").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build erismount/cmd/erismount: %v\n%s", err, out)
		}
	}
	em.Env = append(withoutEnv(os.Environ(), "XDG_CACHE_HOME", "ERISMOUNT_PEERS"), "XDG_CACHE_HOME="+filepath.Join(work, "xdg"))

	// drop empties the kernel's caches on the client's side only: the
	// servers' files are read back in, since a server answering
	// substitutes has what it serves in memory, and its disk is no part
	// of the link being compared.
	serverFiles := []string{narPath, store.Path(), store.Path() + "-wal"}
	res.DropCaches = "yes"
	drop := func() {}
	if !cfg.DropCaches {
		res.DropCaches = "no (-drop-caches=false)"
	} else if err := dropCaches(); err != nil {
		res.DropCaches = "no: " + err.Error()
	} else {
		drop = func() {
			if err := dropCaches(); err != nil {
				log.Warn("drop caches", "err", err)
			}
			readFiles(serverFiles...)
		}
	}

	ops := Ops(cfg.Readers)
	if len(cfg.Ops) > 0 {
		ops = slices.DeleteFunc(ops, func(op Op) bool { return !slices.Contains(cfg.Ops, op.Key) })
		if len(ops) != len(cfg.Ops) {
			return nil, fmt.Errorf("operations %q: want keys among those of Ops", cfg.Ops)
		}
	}
	res.Ops = ops
	grid := func() []Cell { return make([]Cell, len(ops)) }
	res.Nar, res.Local, res.Warm, res.Hot = grid(), grid(), grid(), grid()
	for _, tr := range cfg.Transports {
		res.Cold[tr] = grid()
		res.Wire[tr] = make([][]int64, len(ops))
	}
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return nil, err
	}
	cacheStore := filepath.Join(work, "cache.sqlite")
	urn := rc.URN()

	for run := range cfg.Runs {
		log.Info("run", "n", run+1, "of", cfg.Runs)
		// Whole nar: fetch and unpack once, then every operation.
		dest := filepath.Join(work, "unpacked")
		drop()
		t0 := time.Now()
		client := &http.Client{Transport: &http.Transport{}}
		if _, err := FetchUnpack(ctx, client, narURL, sum, dest); err != nil {
			return nil, fmt.Errorf("whole nar: %w", err)
		}
		ready := time.Since(t0)
		client.CloseIdleConnections()
		log.Info("whole nar fetched and unpacked", "took", ready)
		for i, op := range ops {
			first := runOp(ctx, op, dest, tree, 0, time.Now())
			again := runOp(ctx, op, dest, tree, 0, time.Now())
			for _, s := range []Sample{first, again} {
				if s.Err != nil {
					return nil, fmt.Errorf("whole nar: %s: %w", op.Name, s.Err)
				}
			}
			first.D += ready
			res.Nar[i] = append(res.Nar[i], first)
			res.Local[i] = append(res.Local[i], again)
		}
		if err := os.RemoveAll(dest); err != nil {
			return nil, err
		}

		// Lazy: per operation, from an empty block store (cold), then
		// from the filled store on a fresh mount (warm), then the same
		// mount again (hot).
		// Warm and hot follow the first cold run of the operation that
		// succeeded, whatever its transport: they touch no network.
		warmed := make([]bool, len(ops))
		for _, tr := range cfg.Transports {
			for i, op := range ops {
				for _, suffix := range []string{"", "-wal", "-shm"} {
					os.Remove(cacheStore + suffix)
				}
				drop()
				wire0 := proxies[tr].Stats().Down
				cold, _, err := lazy(ctx, em, urn, mnt, peers[tr], cacheStore, op, tree, false, cfg.OpTimeout)
				if err != nil {
					return nil, fmt.Errorf("lazy cold over %s: %s: %w", tr, op.Name, err)
				}
				res.Cold[tr][i] = append(res.Cold[tr][i], cold)
				wire := proxies[tr].Stats().Down - wire0
				res.Wire[tr][i] = append(res.Wire[tr][i], wire)
				log.Info("lazy cold", "transport", tr, "op", op.Name, "took", cold.D, "err", cold.Err, "link_bytes", wire)
				if warmed[i] || cold.Err != nil {
					// Warm means every block the operation needs is in
					// the store: not so after a cold run that failed.
					continue
				}
				warmed[i] = true
				drop()
				warm, hot, err := lazy(ctx, em, urn, mnt, peers[tr], cacheStore, op, tree, true, cfg.OpTimeout)
				if err != nil {
					return nil, fmt.Errorf("lazy warm over %s: %s: %w", tr, op.Name, err)
				}
				res.Warm[i] = append(res.Warm[i], warm)
				res.Hot[i] = append(res.Hot[i], hot)
				log.Info("lazy warm and hot", "op", op.Name, "warm", warm.D, "warm_err", warm.Err, "hot", hot.D, "hot_err", hot.Err)
			}
		}
		for i, ok := range warmed {
			if !ok {
				res.Warm[i] = append(res.Warm[i], Sample{Err: errNotWarm})
				res.Hot[i] = append(res.Hot[i], Sample{Err: errNotWarm})
			}
		}
	}
	for _, p := range proxies {
		res.Dropped += p.Stats().Dropped
	}
	res.Dropped += narProxy.Stats().Dropped
	res.LoadAfter = loadavg()
	res.Elapsed = time.Since(start)
	return res, nil
}

// lazy mounts the tree and runs op: first is the time from the start of
// the mount to the end of op; with again, hot is op run a second time on
// the same mount. An operation that fails or overstays limit is a failed
// sample; failing to mount or unmount is an error.
func lazy(ctx context.Context, em *Erismount, urn, mnt, peer, store string, op Op, t *Tree, again bool, limit time.Duration) (first, hot Sample, err error) {
	t0 := time.Now()
	pid, err := em.Mount(ctx, urn, mnt, peer, store)
	if err != nil {
		return first, hot, err
	}
	defer func() {
		if uerr := em.Unmount(mnt, pid); err == nil {
			err = uerr
		}
	}()
	first = runOp(ctx, op, mnt, t, limit, t0)
	if again {
		hot = runOp(ctx, op, mnt, t, limit, time.Now())
	}
	return first, hot, ctx.Err()
}

// runOp runs op on the tree at dir and returns the time since t0, or how
// it failed; limit (if not 0) bounds its run.
func runOp(ctx context.Context, op Op, dir string, t *Tree, limit time.Duration, t0 time.Time) Sample {
	octx, cancel := ctx, context.CancelFunc(func() {})
	if limit > 0 {
		octx, cancel = context.WithTimeout(ctx, limit)
	}
	defer cancel()
	err := op.Run(octx, dir, t)
	s := Sample{D: time.Since(t0), Err: err}
	if err != nil && ctx.Err() == nil && octx.Err() != nil {
		s.Err = &OverTimeError{Limit: limit}
	}
	return s
}

// readFiles reads the files that exist among paths, so that their pages
// are in the kernel's cache.
func readFiles(paths ...string) {
	for _, p := range paths {
		if f, err := os.Open(p); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
	}
}

// shapeURL puts a shaped proxy in front of the server at rawURL: UDP for
// coap://, TCP otherwise.
func shapeURL(rawURL string, sh Shape) (*Proxy, error) {
	host := hostOf(rawURL)
	if host == "" {
		return nil, fmt.Errorf("no host:port in %q", rawURL)
	}
	if strings.HasPrefix(rawURL, "coap://") {
		return ShapeUDP(host, sh)
	}
	return ShapeTCP(host, sh)
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cpuModel is the model name of the first CPU, or "".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
