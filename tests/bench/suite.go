package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"erismount/cache"
	"erismount/eris"
	"erismount/erisfs"
	"erismount/fetcher"
	"erismount/narinfo/erisnar"
	"erismount/narinfo/nar"
)

// The suite measures whole store items of real software, as a substitute
// fetches them, against the compressed nars users have today, on the same
// shaped link: every nar path and every ERIS source of issue 15, and the
// lazy `ls -R` + one small file.

// SuiteConfig is one run of the suite.
type SuiteConfig struct {
	Items []string // names among itemOrder
	// Scenarios, if not empty, limits the run to these scenario keys
	// (nar, zstd, xz, ls+small, blocks, eris-nar, upgrade).
	Scenarios []string
	Shape     Shape
	Runs      int
	ZstdLevel int // of the zstd nar (`zstd -19`)
	XZLevel   int // of the xz nar (`xz -6`)
	// GenFiles and GenBytes size the generated tree.
	GenFiles int
	GenBytes int64
	// PrepCache, if set, keeps the compressed nars between runs, by
	// NarHash and level: compressing a 300 MB nar at zstd -19 and xz -6
	// takes minutes, and it is no part of what is measured.
	PrepCache string
	Erismount string // "" builds it
	// MountLogs, if set, keeps each lazy mount's log (erismount -v, run in
	// the foreground) in this directory.
	MountLogs  string
	WorkDir    string
	Keep       bool
	DropCaches bool
	Logger     *slog.Logger `json:"-"`
}

// A scenario is one way of getting an item (or part of it) over the link.
type scenario struct{ Key, Name string }

// Scenario keys.
const (
	scNar     = "nar"
	scZstd    = "zstd"
	scXZ      = "xz"
	scLsSmall = "ls+small"
	scBlocks  = "blocks"
	scERISNar = "eris-nar"
	scUpgrade = "upgrade"
)

func scenarios(cfg SuiteConfig) []scenario {
	return []scenario{
		{scNar, "nar, uncompressed"},
		{scZstd, fmt.Sprintf("nar, `zstd -%d`", cfg.ZstdLevel)},
		{scXZ, fmt.Sprintf("nar, `xz -%d`", cfg.XZLevel)},
		{scLsSmall, "lazy: `ls -R` + one small file"},
		{scBlocks, "whole item: ERIS-FS blocks"},
		{scERISNar, "whole item: ERIS-Nar (zstd)"},
		{scUpgrade, "upgrade: ERIS-FS blocks, older version's cached"},
	}
}

// LoadSuiteResults reads the JSON of a run (-json), to render its report
// again.
func LoadSuiteResults(path string) (*SuiteResults, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r SuiteResults
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, it := range r.Items {
		for _, ms := range it.M {
			for i := range ms {
				if ms[i].Error != "" {
					ms[i].Err = errors.New(ms[i].Error)
				}
			}
		}
	}
	return &r, nil
}

// Measure is one sample: how long, and the bytes the link carried to the
// client meanwhile.
type Measure struct {
	D     time.Duration
	Bytes int64
	// After is how long the untimed end of the sample took: the unmount
	// after the lazy `ls -R` + one small file.
	After time.Duration `json:",omitempty"`
	Err   error         `json:"-"`
	Error string        `json:",omitempty"` // Err's text, for the JSON of a run
}

// ItemResult is everything measured of one item.
type ItemResult struct {
	Item                      Item
	Encode                    erisfs.EncodeStats
	NarSize, ZstdSize, XZSize int64
	ERISNarBlocks             int64 // bytes of the ERIS-Nar's blocks (32 KiB each)
	ZstdSeconds, XZSeconds    float64
	M                         map[string][]Measure
}

// SuiteResults are the results of a run.
type SuiteResults struct {
	Config     SuiteConfig
	Scenarios  []scenario
	Items      []*ItemResult
	DropCaches string
	LoadBefore string
	LoadAfter  string
	Elapsed    time.Duration
	Command    string // the command line that ran it
}

// RunSuite sets the items up and measures them.
func RunSuite(ctx context.Context, cfg SuiteConfig) (*SuiteResults, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Runs = max(cfg.Runs, 1)
	if cfg.ZstdLevel == 0 {
		cfg.ZstdLevel = 19
	}
	if cfg.XZLevel == 0 {
		cfg.XZLevel = 6
	}
	start := time.Now()
	res := &SuiteResults{Config: cfg, Scenarios: scenarios(cfg), LoadBefore: loadavg()}
	if err := becomeSubreaper(); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "erismount-suite-")
	if err != nil {
		return nil, err
	}
	if cfg.Keep {
		log.Info("work directory kept", "dir", work)
	} else {
		defer removeAll(work)
	}
	goBin, _ := exec.LookPath("go")
	items, err := SetupItems(ctx, work, cfg.Items, &itemSetup{goBin: goBin, genFiles: cfg.GenFiles, genBytes: cfg.GenBytes})
	if err != nil {
		return nil, err
	}
	em := &Erismount{Bin: cfg.Erismount, LogDir: cfg.MountLogs}
	if em.Bin == "" {
		em.Bin = filepath.Join(work, "erismount")
		if out, err := exec.CommandContext(ctx, goBin, "build", "-o", em.Bin, "erismount/cmd/erismount").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build erismount/cmd/erismount: %v\n%s", err, out)
		}
	}
	em.Env = append(withoutEnv(os.Environ(), "XDG_CACHE_HOME", "ERISMOUNT_PEERS"), "XDG_CACHE_HOME="+filepath.Join(work, "xdg"))

	// The servers: blocks over CoAP/TCP from one SQLite store, the nars
	// from a directory over HTTP, each behind its own shaped link.
	store, err := cache.OpenSQLite(filepath.Join(work, "server.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited, Logger: log})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	srv := fetcher.NewServer(store, fetcher.ServerOptions{Logger: log})
	defer srv.Close()
	u, err := srv.Listen(ctx, "coap+tcp://127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	blockProxy, err := ShapeTCP(hostOf(u), cfg.Shape)
	if err != nil {
		return nil, err
	}
	defer blockProxy.Close()
	peer := "coap+tcp://" + blockProxy.Addr
	site := filepath.Join(work, "site")
	if err := os.Mkdir(site, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir(site))}
	go hs.Serve(ln)
	defer hs.Close()
	narProxy, err := ShapeTCP(ln.Addr().String(), cfg.Shape)
	if err != nil {
		return nil, err
	}
	defer narProxy.Close()
	narBase := "http://" + narProxy.Addr + "/"

	res.DropCaches = "yes"
	dropOK := cfg.DropCaches
	if !cfg.DropCaches {
		res.DropCaches = "no (-drop-caches=false)"
	} else if err := dropCaches(); err != nil {
		res.DropCaches, dropOK = "no: "+err.Error(), false
	}
	s := &suiteRun{cfg: cfg, log: log, work: work, store: store, peer: peer, narBase: narBase, site: site,
		em: em, blockProxy: blockProxy, narProxy: narProxy, dropOK: dropOK}
	for _, it := range items {
		r, err := s.item(ctx, it)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", it.Name, err)
		}
		res.Items = append(res.Items, r)
	}
	res.LoadAfter = loadavg()
	res.Elapsed = time.Since(start)
	return res, nil
}

// suiteRun is the state of a run.
type suiteRun struct {
	cfg                  SuiteConfig
	log                  *slog.Logger
	work, site           string
	store                *cache.SQLite
	peer, narBase        string
	em                   *Erismount
	blockProxy, narProxy *Proxy
	dropOK               bool
	serverFiles          []string
	// timedEnd, if a measured function sets it, ends the timed span there:
	// what follows is cleanup no user waits for (see lsSmall).
	timedEnd time.Time
}

// drop empties the client's kernel caches and reads the servers' files
// back in (a server has what it serves in memory).
func (s *suiteRun) drop() {
	if !s.dropOK {
		return
	}
	if err := dropCaches(); err != nil {
		s.log.Warn("drop caches", "err", err)
	}
	readFiles(s.serverFiles...)
}

// item prepares one item — its nar, zstd and xz nars, the ERIS-FS tree
// and the ERIS-Nar in the server's store — and measures every scenario.
func (s *suiteRun) item(ctx context.Context, it Item) (*ItemResult, error) {
	log := s.log.With("item", it.Name)
	r := &ItemResult{Item: it, M: map[string][]Measure{}}
	base := filepath.Join(s.site, it.Name)
	log.Info("nar")
	sum, err := WriteNar(ctx, it.Dir, base+".nar")
	if err != nil {
		return nil, err
	}
	r.NarSize = sum.Size
	if r.ZstdSeconds, err = s.compress(ctx, "zstd", s.cfg.ZstdLevel, sum, base+".nar", base+".nar.zst"); err != nil {
		return nil, err
	}
	if r.XZSeconds, err = s.compress(ctx, "xz", s.cfg.XZLevel, sum, base+".nar", base+".nar.xz"); err != nil {
		return nil, err
	}
	r.ZstdSize, r.XZSize = fileSize(base+".nar.zst"), fileSize(base+".nar.xz")

	log.Info("ERIS-FS and ERIS-Nar")
	rc, st, err := erisfs.EncodeDir(ctx, it.Dir, s.store, erisfs.EncodeOptions{})
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	r.Encode = st
	zf, err := os.Open(base + ".nar.zst")
	if err != nil {
		return nil, err
	}
	narCap, err := eris.Encode(ctx, zf, s.store, eris.EncodeOptions{BlockSize: eris.BlockSize32K})
	zf.Close()
	if err != nil {
		return nil, err
	}
	r.ERISNarBlocks = eris.BlockCount(narCap, r.ZstdSize) * eris.BlockSize32K
	if err := s.store.Flush(ctx); err != nil {
		return nil, err
	}
	s.serverFiles = []string{base + ".nar", base + ".nar.zst", base + ".nar.xz", s.store.Path(), s.store.Path() + "-wal"}

	dest := filepath.Join(s.work, "dest")
	clientStore := filepath.Join(s.work, "client.sqlite")
	// The older version's blocks, encoded once into a store copied
	// before each upgrade run.
	seedStore := filepath.Join(s.work, "seed-"+it.Name+".sqlite")
	if it.Older != "" {
		log.Info("older version's blocks")
		if err := seed(ctx, seedStore, it.Older); err != nil {
			return nil, fmt.Errorf("seed the cache: %w", err)
		}
		defer removeStore(seedStore)
	}
	mnt := filepath.Join(s.work, "mnt")
	os.MkdirAll(mnt, 0o755)
	reset := func() error {
		removeStore(clientStore)
		return removeAll(dest)
	}
	measure := func(key string, p *Proxy, f func() error) {
		if key == scUpgrade && it.Older == "" || len(s.cfg.Scenarios) > 0 && !slices.Contains(s.cfg.Scenarios, key) {
			return
		}
		if err := reset(); err != nil {
			r.M[key] = append(r.M[key], Measure{Err: err})
			return
		}
		if key == scUpgrade {
			err := copyFile(seedStore, clientStore)
			if _, werr := os.Stat(seedStore + "-wal"); err == nil && werr == nil {
				err = copyFile(seedStore+"-wal", clientStore+"-wal")
			}
			if err != nil {
				r.M[key] = append(r.M[key], Measure{Err: fmt.Errorf("seed the cache: %w", err)})
				return
			}
		}
		s.drop()
		b0 := p.Stats().Down
		s.timedEnd = time.Time{}
		t0 := time.Now()
		err := f()
		end := time.Now()
		m := Measure{D: end.Sub(t0), Bytes: p.Stats().Down - b0, Err: err}
		if !s.timedEnd.IsZero() {
			m.D, m.After = s.timedEnd.Sub(t0), end.Sub(s.timedEnd)
		}
		if err != nil {
			m.Error = err.Error()
		}
		r.M[key] = append(r.M[key], m)
		log.Info("measured", "scenario", key, "took", m.D, "bytes", m.Bytes, "err", err)
	}
	for run := range s.cfg.Runs {
		log.Info("run", "n", run+1)
		for _, c := range []struct{ key, file, method string }{
			{scNar, ".nar", "none"}, {scZstd, ".nar.zst", "zstd"}, {scXZ, ".nar.xz", "xz"},
		} {
			measure(c.key, s.narProxy, func() error {
				return fetchUnpack(ctx, s.narBase+it.Name+c.file, c.method, sum, dest)
			})
		}
		measure(scLsSmall, s.blockProxy, func() error {
			return s.lsSmall(ctx, rc, mnt, clientStore, it)
		})
		for _, key := range []string{scBlocks, scUpgrade} {
			measure(key, s.blockProxy, func() error {
				return s.viaBlocks(ctx, clientStore, func(g eris.BlockGetter) (io.ReadCloser, error) {
					tree, err := erisfs.Open(ctx, rc, g, erisfs.OpenOptions{GetterVerifies: true})
					if err != nil {
						return nil, err
					}
					pr, pw := io.Pipe()
					go func() {
						_, err := erisnar.Write(ctx, pw, tree, erisnar.Options{})
						pw.CloseWithError(err)
					}()
					return pr, nil
				}, "none", sum, dest)
			})
		}
		measure(scERISNar, s.blockProxy, func() error {
			// No SQLite here: the compressed nar's blocks are of no use
			// to later items (compression hides what versions share).
			return s.viaBlocks(ctx, "", func(g eris.BlockGetter) (io.ReadCloser, error) {
				er, err := eris.NewReader(ctx, narCap, g)
				if err != nil {
					return nil, err
				}
				pr, pw := io.Pipe()
				go func() {
					_, err := er.WriteTo(pw) // each leaf fetched once, in order, many at a time
					pw.CloseWithError(err)
				}()
				return pr, nil
			}, "zstd", sum, dest)
		})
	}
	return r, reset()
}

// lsSmall mounts the tree cold and runs `ls -R` and reads the small file.
// The timed span ends there: the unmount that follows is as untimed as
// the nar paths' deleting the tree they unpacked, since neither is waited
// for by someone who lists a tree and reads a file; its time is kept
// beside the sample (Measure.After) and shown in the report.
func (s *suiteRun) lsSmall(ctx context.Context, rc eris.ReadCapability, mnt, store string, it Item) (err error) {
	t0 := time.Now()
	pid, err := s.em.Mount(ctx, rc.URN(), mnt, s.peer, store)
	if err != nil {
		return err
	}
	t1 := time.Now()
	var t2, t3 time.Time
	defer func() {
		err = errors.Join(err, s.em.Unmount(mnt, pid))
		t4 := time.Now()
		if !t3.IsZero() {
			s.log.Info("ls+small phases", "item", it.Name, "mount", t1.Sub(t0), "ls_R", t2.Sub(t1), "small", t3.Sub(t2), "unmount", t4.Sub(t3))
		}
	}()
	if err := lsR(ctx, mnt, nil); err != nil {
		return err
	}
	t2 = time.Now()
	b, err := os.ReadFile(filepath.Join(mnt, it.Small))
	if err != nil {
		return err
	}
	if string(b) != string(it.SmallContent) {
		return fmt.Errorf("%s: read %d bytes unlike the %d published", it.Small, len(b), len(it.SmallContent))
	}
	t3 = time.Now()
	s.timedEnd = t3
	return nil
}

// viaBlocks fetches from the block peer through a client cache at
// storePath (SQLite, as erismount keeps it; "" for memory only), opens the
// stream of method open gives, and unpacks it into dest, its NarHash
// checked.
func (s *suiteRun) viaBlocks(ctx context.Context, storePath string, open func(eris.BlockGetter) (io.ReadCloser, error), method string, want nar.Sum, dest string) error {
	opts := cache.TieredOptions{Memory: cache.NewMemory(64 << 20)}
	if storePath != "" {
		disk, err := cache.OpenSQLite(storePath, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
		if err != nil {
			return err
		}
		defer disk.Close()
		opts.Disk = disk
	}
	p, err := fetcher.Dial(ctx, s.peer, fetcher.ClientOptions{})
	if err != nil {
		return err
	}
	pool := fetcher.NewPool([]fetcher.Peer{p}, fetcher.PoolOptions{})
	defer pool.Close()
	opts.Remote = pool
	tiered := cache.NewTiered(opts)
	defer tiered.Close()
	rc, err := open(tiered)
	if err != nil {
		return err
	}
	defer rc.Close()
	return unpackStream(ctx, rc, method, want, dest)
}

// seed fills the client cache at path with the blocks of the tree at dir,
// encoded locally: what a user who has the older version holds.
func seed(ctx context.Context, path, dir string) error {
	st, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		return err
	}
	_, _, err = erisfs.EncodeDir(ctx, dir, st, erisfs.EncodeOptions{})
	return errors.Join(err, st.Flush(ctx), st.Close())
}

// removeStore removes a SQLite store and its WAL files.
func removeStore(path string) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
}

// copyFile copies src to dst (which is replaced).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// compress makes dst, the nar src compressed with tool at level, or links
// it from the prep cache where an earlier run left it; it returns how long
// compressing took (the earlier run's time for a cached file).
func (s *suiteRun) compress(ctx context.Context, tool string, level int, sum nar.Sum, src, dst string) (float64, error) {
	var cached string
	if s.cfg.PrepCache != "" {
		cached = filepath.Join(s.cfg.PrepCache, fmt.Sprintf("%s.%s-%d", sum.Hash.Nix32(), tool, level))
		if b, err := os.ReadFile(cached + ".seconds"); err == nil {
			var secs float64
			if _, err := fmt.Sscan(string(b), &secs); err == nil && os.Link(cached, dst) == nil {
				return secs, nil
			}
		}
	}
	t0 := time.Now()
	if err := compressFile(ctx, tool, level, src, dst); err != nil {
		return 0, err
	}
	secs := time.Since(t0).Seconds()
	if cached != "" {
		os.MkdirAll(s.cfg.PrepCache, 0o755)
		os.Remove(cached)
		if err := os.Link(dst, cached); err != nil {
			copyFile(dst, cached)
		}
		os.WriteFile(cached+".seconds", []byte(fmt.Sprintf("%.1f\n", secs)), 0o644)
	}
	return secs, nil
}

// fetchUnpack GETs url and unpacks the nar compressed with method into
// dest, checking its NarHash as it streams: what a substitute costs today.
func fetchUnpack(ctx context.Context, url, method string, want nar.Sum, dest string) error {
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return unpackStream(ctx, resp.Body, method, want, dest)
}

// unpackStream decompresses r with the reference tool of method (zstd -dc,
// xz -dc: the libraries Nix and Guix use), unpacks the nar into dest and
// checks it is want.
func unpackStream(ctx context.Context, r io.Reader, method string, want nar.Sum, dest string) error {
	in := r
	var cmd *exec.Cmd
	if method != "none" {
		cmd = exec.CommandContext(ctx, method, "-dc")
		cmd.Stdin = r
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		in = out
	}
	hw := nar.NewHashingWriter(nil)
	err := Unpack(nar.NewReader(io.TeeReader(in, hw)), dest)
	if err == nil {
		_, err = io.Copy(hw, in) // nothing, or trailing garbage for the hash to catch
	}
	if cmd != nil {
		if err != nil {
			cmd.Process.Kill()
		}
		err = errors.Join(err, cmd.Wait())
	}
	if err != nil {
		return err
	}
	if got := hw.Sum(); got != want {
		return fmt.Errorf("%w: got %v, want %v", errNarHash, got, want)
	}
	return nil
}

// compressFile compresses src into dst with the reference tool, on every
// core.
func compressFile(ctx context.Context, tool string, level int, src, dst string) error {
	cmd := exec.CommandContext(ctx, tool, fmt.Sprintf("-%d", level), "-T0", "-q", "-c", src)
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	cmd.Stdout = out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// removeAll removes p, making read-only directories (an unpacked nar's)
// writable first.
func removeAll(p string) error {
	filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o755)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// median returns the median sample of ms that succeeded (the lower middle
// one), and whether there is one.
func median(ms []Measure) (Measure, bool) {
	var ok []Measure
	for _, m := range ms {
		if m.Err == nil {
			ok = append(ok, m)
		}
	}
	if len(ok) == 0 {
		return Measure{}, false
	}
	slices.SortFunc(ok, func(a, b Measure) int { return int(a.D - b.D) })
	return ok[(len(ok)-1)/2], true
}
