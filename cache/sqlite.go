package cache

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sync/semaphore"

	"erismount/eris"
)

// Unlimited, as SQLiteOptions.SoftQuota or HardCap, turns the limit off.
const Unlimited = -1

// DefaultSoftQuota is the soft quota of a zero SQLiteOptions.
const DefaultSoftQuota = 10 << 30

// SQLiteOptions configure OpenSQLite. The zero value is a cache of
// DefaultSoftQuota with a hard cap a quarter above it.
type SQLiteOptions struct {
	// SoftQuota is how many bytes of blocks the store keeps: after each
	// write batch, least recently used unpinned blocks are evicted down to
	// it. 0 means DefaultSoftQuota; Unlimited (negative) evicts only what
	// the hard cap demands, and with HardCap Unlimited never evicts, as a
	// store that is the content of a server must not. Quotas count block
	// bytes: the file is about 7% larger for 32 KiB blocks and 25% for
	// 1 KiB ones, and does not shrink after eviction (SQLite reuses the
	// freed pages).
	SoftQuota int64
	// HardCap is never exceeded: a put that would pass it evicts unpinned
	// blocks first and fails with ErrFull if that is not enough (when
	// pinned blocks fill the store). 0 means SoftQuota + SoftQuota/4, or
	// Unlimited when SoftQuota is; Unlimited turns the cap off.
	HardCap int64
	// MaxBatch bounds the blocks written per transaction; 0 means 1000.
	MaxBatch int
	// MaxPending bounds the bytes of accepted puts not yet committed;
	// PutBlock waits beyond it. 0 means 64 MiB.
	MaxPending int64
	// TouchInterval is how often access times of blocks that were read
	// are written, in one transaction; 0 means 2 s. Writes of blocks also
	// write the access times gathered so far.
	TouchInterval time.Duration
	// ReadConns bounds concurrent reads; 0 means 4.
	ReadConns int
	// MmapSize is SQLite's mmap_size per connection; 0 (or less) means no
	// memory mapping. Off by default: it measured within noise of read(2)
	// here (BenchmarkSQLiteGet), and an I/O error on a mapped page is a
	// SIGBUS that would take the mount down instead of failing one read.
	MmapSize int64
	// RetryInterval is how long a degraded store — one whose last write
	// failed, as on a full disk — refuses puts at once (ErrUnavailable)
	// before it lets the next batch try the disk again; 0 means 1 s.
	RetryInterval time.Duration
	// Logger receives damage, eviction and write failures; nil discards.
	Logger *slog.Logger
}

func (o *SQLiteOptions) fill() error {
	if o.SoftQuota == 0 {
		o.SoftQuota = DefaultSoftQuota
	}
	if o.SoftQuota < 0 {
		o.SoftQuota = Unlimited
	}
	if o.HardCap == 0 {
		o.HardCap = Unlimited
		if o.SoftQuota != Unlimited {
			o.HardCap = o.SoftQuota + o.SoftQuota/4
		}
	}
	if o.HardCap < 0 {
		o.HardCap = Unlimited
	}
	if o.HardCap != Unlimited && o.SoftQuota > o.HardCap {
		return fmt.Errorf("soft quota %d above hard cap %d", o.SoftQuota, o.HardCap)
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 64 << 20
	}
	o.MaxPending = max(o.MaxPending, eris.BlockSize32K)
	if o.TouchInterval <= 0 {
		o.TouchInterval = 2 * time.Second
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	o.MmapSize = max(o.MmapSize, 0)
	if o.RetryInterval <= 0 {
		o.RetryInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// SQLite is a persistent block store in one SQLite file (WAL mode). Reads
// run concurrently on a pool of connections; every write goes through one
// writer goroutine that commits many operations per transaction. Blocks
// read back are verified against their reference: a damaged copy is
// deleted and reported as missing (ErrDamaged, eris.ErrNotFound), never
// returned. See doc.go for quotas, pins and crash safety.
type SQLite struct {
	path string
	file string // path made absolute; "" for a store in memory
	opts SQLiteOptions
	log  *slog.Logger

	wdb   *sql.DB
	wconn *sql.Conn // the writer's; used by the writer goroutine only
	wst   writeStmts
	rdb   *sql.DB
	has   *sql.Stmt

	room  *semaphore.Weighted // bytes of pending puts
	clock atomic.Int64        // access order: larger is more recent
	wake  chan struct{}
	stop  chan struct{}
	exit  chan struct{}

	mu           sync.Mutex
	closed       bool
	queue        []op
	seq, done    uint64        // last op enqueued, last op finished
	doneCh       chan struct{} // closed and replaced whenever done advances
	pending      map[eris.Ref]pendingPut
	pendingBytes int64
	stored       int64 // bytes in the file after the last commit
	touched      map[eris.Ref]int64
	writeErr     error // first write failure since the last Flush
	writeErrs    int
	mounts       map[*Pin]struct{} // mount pins to drop on Close

	memoryOnly bool      // the file could not be written at open: see openMemory
	replaced   *Replaced // the damaged file moved aside at open, or nil
	walLimit   int64     // bytes of -wal file after which the writer checkpoints and truncates it
	dbBudget   int64     // bytes the main file may grow to, or Unlimited (see fileBudget)
	batchBytes int       // block bytes per write transaction

	writes     episode      // failing write transactions: the store is degraded while one goes on
	degraded   atomic.Bool  // the last write transaction failed
	lastFail   atomic.Int64 // time of the last failed write transaction (UnixNano)
	staleRetry atomic.Bool  // dropping stale mount pins failed at open: retry once writes work
	corrupt    atomic.Bool  // SQLite found the file damaged while in use: move it aside on Close
	opening    atomic.Bool  // in setup: OpenSQLite reports failures, the writer need not

	evicted, damaged, rejected, commits, failed, refused atomic.Int64
}

// Replaced tells of a damaged store file that OpenSQLite moved aside before
// starting a fresh one.
type Replaced struct {
	Aside   string   // the damaged file's new name (its -wal and -shm files were moved with it)
	Err     error    // what SQLite said about it
	Pins    []string // names of the kept pins it held (lost with it)
	PinsErr error    // why the pins could not be read, if they could not
}

var _ eris.BlockStore = (*SQLite)(nil)

type pendingPut struct {
	data []byte
	seq  uint64
}

// OpenSQLite opens the block store at path, creating it (and its directory)
// if needed, migrating an older schema and dropping mount pins whose process
// is gone. Errors name the file and what is wrong with it.
//
// The cache holds nothing that cannot be fetched again except pins, so two
// failures do not stop it. A file SQLite finds damaged ("database disk
// image is malformed", "file is not a database") is moved aside as
// PATH.damaged-TIME with its -wal and -shm files, and a fresh store is
// started; the log names the pins lost with it (Stats().Replaced too). A
// store that cannot be written (a full disk, a read-only file system) is
// replaced by an empty one in memory for this run: nothing is kept, every
// block comes from memory and peers (Stats().MemoryOnly). Both are logged
// once. A foreign or newer SQLite database is refused as before.
func OpenSQLite(path string, opts SQLiteOptions) (*SQLite, error) {
	fail := func(err error) (*SQLite, error) { return nil, fmt.Errorf("cache: open %s: %w", path, err) }
	if path == "" {
		return fail(errors.New("empty path"))
	}
	if err := opts.fill(); err != nil {
		return fail(err)
	}
	s, err := openSQLite(path, opts)
	switch {
	case err == nil:
		return s, nil
	case damagedFile(err):
		rep, merr := moveAside(path, err)
		if merr != nil {
			return fail(fmt.Errorf("%w; moving the damaged file aside failed: %w", err, merr))
		}
		if s, err = openSQLite(path, opts); err != nil {
			return fail(fmt.Errorf("after moving the damaged file aside as %s: %w", rep.Aside, err))
		}
		s.replaced = rep
		rep.log(s.log)
		return s, nil
	case unwritable(err):
		opts.Logger.Warn("the block store cannot be written; using an empty store in memory for this run: blocks come from memory and peers and are not kept",
			"store", path, "err", err)
		ms, merr := openMemory(path, opts)
		if merr != nil {
			return fail(fmt.Errorf("%w; opening a store in memory instead failed: %w", err, merr))
		}
		return ms, nil
	}
	return fail(err)
}

func (r *Replaced) log(log *slog.Logger) {
	args := []any{"damaged", r.Aside, "err", r.Err}
	switch {
	case r.PinsErr != nil:
		args = append(args, "lost_pins", "unknown: "+r.PinsErr.Error())
	case len(r.Pins) == 0:
		args = append(args, "lost_pins", "none")
	default:
		args = append(args, "lost_pins", strings.Join(r.Pins, " "))
	}
	log.Error("the block store was damaged: moved it aside and started a fresh one; its blocks will be fetched again, its pins are lost (pin them again)", args...)
}

func openSQLite(path string, opts SQLiteOptions) (_ *SQLite, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := prepareFile(abs); err != nil {
		return nil, err
	}
	s := newSQLite(path, opts)
	s.file = abs
	s.walLimit, s.dbBudget = fileBudget(opts.HardCap)
	s.batchBytes = int(min(maxBatchBytes, max(s.walLimit/4, eris.BlockSize32K)))
	mmap := fmt.Sprintf("PRAGMA mmap_size = %d", opts.MmapSize)
	// page_size only takes effect on a new, empty file, before WAL mode
	// writes the header. The WAL is checkpointed every 4 MiB (walLimit/4 if less) and
	// truncated to walLimit when reset; the writer also truncates it after
	// a commit that leaves it past walLimit/2 (see checkpoint).
	wdb := openDB(fileURI(abs, "_mutex=no&_busy_timeout=10000"), fmt.Sprintf("PRAGMA page_size = %d", pageSize),
		"PRAGMA journal_mode = WAL", fmt.Sprintf("PRAGMA journal_size_limit = %d", s.walLimit),
		fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", max(min(s.walLimit/4, 4<<20)/pageSize, 1)), mmap)
	rdb := openDB(fileURI(abs, "_mutex=no&_busy_timeout=10000&_query_only=1&_stmt_cache_size=4"), mmap)
	if err := s.setup(wdb, rdb); err != nil {
		return nil, err
	}
	return s, nil
}

// openMemory opens an empty store in memory in place of the file at path,
// which cannot be written: it refuses every put (ErrUnavailable) and keeps
// only pins and their tags, so that a mount or status works from memory and
// peers. The in-memory database is shared by the store's connections and
// goes away with the last of them, on Close.
func openMemory(path string, opts SQLiteOptions) (*SQLite, error) {
	s := newSQLite(path, opts)
	s.memoryOnly = true
	s.walLimit, s.dbBudget, s.batchBytes = 0, Unlimited, maxBatchBytes
	uri := fmt.Sprintf("file:erismount-memory-%d?mode=memory&cache=shared", rand.Uint64())
	// Connections sharing a cache lock tables, not files, and the busy
	// timeout does not apply to those locks: readers read uncommitted
	// rows, so a pin being written does not fail a read.
	wdb := openDB(uri+"&_mutex=no", fmt.Sprintf("PRAGMA page_size = %d", pageSize))
	rdb := openDB(uri+"&_mutex=no&_query_only=1&_stmt_cache_size=4", "PRAGMA read_uncommitted = 1")
	if err := s.setup(wdb, rdb); err != nil {
		return nil, err
	}
	return s, nil
}

func newSQLite(path string, opts SQLiteOptions) *SQLite {
	return &SQLite{
		path:    path,
		opts:    opts,
		log:     opts.Logger.With("store", path),
		room:    semaphore.NewWeighted(opts.MaxPending),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		exit:    make(chan struct{}),
		doneCh:  make(chan struct{}),
		pending: make(map[eris.Ref]pendingPut),
		touched: make(map[eris.Ref]int64),
		mounts:  make(map[*Pin]struct{}),
	}
}

// setup takes the writer's pool wdb and the readers' pool rdb (it closes
// both if it fails), checks and migrates the schema, prepares statements,
// starts the writer and drops stale mount pins.
func (s *SQLite) setup(wdb, rdb *sql.DB) (err error) {
	s.wdb, s.rdb = wdb, rdb
	started := false
	defer func() {
		if err != nil {
			if started {
				close(s.stop)
				<-s.exit
			}
			s.closeDB()
		}
	}()
	ctx := context.Background()
	s.wdb.SetMaxOpenConns(1)
	if s.wconn, err = s.wdb.Conn(ctx); err != nil {
		return err
	}
	if !s.memoryOnly {
		var mode string
		if err := s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			return err
		}
		if mode != "wal" {
			return fmt.Errorf("journal mode is %q, want wal (is the file system read-only?)", mode)
		}
	}
	if err := migrate(ctx, s.wconn, schemaVersion); err != nil {
		return err
	}
	if err := s.wst.prepare(ctx, s.wconn); err != nil {
		return err
	}
	s.rdb.SetMaxOpenConns(s.opts.ReadConns)
	s.rdb.SetMaxIdleConns(s.opts.ReadConns) // reopening runs the pragmas again
	if err := s.prepareRead(ctx); err != nil {
		return err
	}
	if s.has, err = s.rdb.PrepareContext(ctx, `SELECT 1 FROM blocks WHERE ref = ?`); err != nil {
		return err
	}
	// The small tables are read whole, so that damage there shows now and
	// the file is replaced, rather than failing every mount later.
	var clock, pins int64
	err = s.wconn.QueryRowContext(ctx, `SELECT coalesce(max(atime), 0), (SELECT bytes FROM totals),
		(SELECT count(*) FROM pins) + (SELECT count(*) FROM pinned) FROM blocks`).Scan(&clock, &s.stored, &pins)
	if err != nil {
		return err
	}
	s.clock.Store(clock)
	s.opening.Store(true)
	go s.run()
	started = true
	defer s.opening.Store(false)
	// Dropping stale pins is a write: on a full disk it fails, and the
	// store goes on degraded (the writer logs it) and retries on recovery.
	if err := s.sync(ctx, s.dropStalePins()); err != nil {
		if !unwritable(err) {
			return fmt.Errorf("drop stale mount pins: %w", err)
		}
		s.staleRetry.Store(true)
	}
	return nil
}

// fileBudget divides a hard cap between the files: walLimit bytes for the
// -wal file (an eighth of the cap, 1 to 64 MiB), shmReserve for -shm, and
// the rest, dbBudget, for the database file, which the writer does not let
// grow past it (see writeTx.fits). Below minFileCap the files cannot fit in
// the cap (the schema and one WAL take more): only block bytes are capped.
func fileBudget(hard int64) (walLimit, dbBudget int64) {
	walLimit = 64 << 20
	if hard == Unlimited {
		return walLimit, Unlimited
	}
	walLimit = min(max(hard/8, 1<<20), walLimit)
	if hard < minFileCap {
		return walLimit, Unlimited
	}
	return walLimit, hard - walLimit - shmReserve
}

const (
	// minFileCap is the smallest hard cap that also bounds the files.
	minFileCap = 4 << 20
	// shmReserve is kept for the -shm file: 32 KiB index per 4096 WAL
	// frames, and a 64 MiB WAL has 4096 frames of 16 KiB.
	shmReserve = 64 << 10
)

// moveAside renames the damaged store file at path, with its -wal and -shm
// files, to PATH.damaged-TIME, and reads what pins it held.
func moveAside(path string, cause error) (*Replaced, error) {
	stamp := time.Now().UTC().Format("20060102T150405Z")
	aside := path + ".damaged-" + stamp
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.damaged-%s.%d", path, stamp, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return nil, err
	}
	for _, ext := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+ext, aside+ext); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	r := &Replaced{Aside: aside, Err: cause}
	r.Pins, r.PinsErr = readPins(aside)
	return r, nil
}

// readPins reads the names of the kept pins of a store file that may be
// damaged, without changing it.
func readPins(path string) ([]string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	db := openDB(fileURI(abs, "mode=ro&_busy_timeout=1000"))
	defer db.Close()
	rows, err := db.Query(`SELECT DISTINCT name FROM pins WHERE owner = '' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return names, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// prepareFile creates the directory and, for a new store, an empty file
// readable by its owner only: pins hold read capabilities, and SQLite gives
// its -wal and -shm files the mode of the database file.
func prepareFile(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create its directory: %w", err)
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return errors.New("is a directory, not an SQLite file")
	case err == nil && !fi.Mode().IsRegular():
		return fmt.Errorf("is not a regular file (mode %v)", fi.Mode())
	case errors.Is(err, fs.ErrNotExist):
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cannot create the file: %w", withoutPath(err))
		}
		if f != nil {
			return f.Close()
		}
		return nil
	case err != nil:
		return withoutPath(err)
	}
	// An existing file must be readable and writable by us, and SQLite
	// creates its -wal and -shm files beside it: checking gives plainer
	// messages than SQLite's "unable to open database file".
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot open the file for reading and writing: %w", withoutPath(err))
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := syscall.Access(dir, 0x2 /* W_OK */); err != nil {
		return fmt.Errorf("its directory %s is not writable (%w); SQLite needs to create the -wal and -shm files there", dir, err)
	}
	return nil
}

// withoutPath drops the path from an *fs.PathError about the store's own
// file: the caller names the file already.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// fileURI is the URI of the file at the absolute path abs with SQLite
// parameters params. A URI filename, so that '?' and '#' in a path cannot
// be taken for parameters (sqlite.org/uri.html).
func fileURI(abs, params string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs) + "?" + params
}

// openDB returns a pool of connections to the database at uri; pragmas run
// on each new connection. database/sql closes the connector with the pool.
func openDB(uri string, pragmas ...string) *sql.DB {
	drv := &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		for _, p := range pragmas {
			if _, err := c.Exec(p, nil); err != nil {
				return err
			}
		}
		return nil
	}}
	return sql.OpenDB(connector{drv: drv, dsn: uri})
}

type connector struct {
	drv *sqlite3.SQLiteDriver
	dsn string
}

func (c connector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c connector) Driver() driver.Driver                        { return c.drv }

// Path is the file the store was opened from.
func (s *SQLite) Path() string { return s.path }

// GetBlock returns the block, verified against ref, or an error matching
// eris.ErrNotFound. A damaged copy is deleted and reported as missing (the
// error also matches ErrDamaged). Blocks accepted by PutBlock are returned
// before they are committed.
func (s *SQLite) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, s.closedError("get", ref)
	}
	if p, ok := s.pending[ref]; ok {
		b := bytes.Clone(p.data)
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	b, err := s.read(ctx, ref)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, eris.NotFound(ref)
	case errors.Is(err, errNotBlob):
		return nil, s.damage(ref, err)
	case damagedFile(err) && !s.memoryOnly:
		// The file's structure is broken: Tiered asks the peers, and
		// Close moves the file aside.
		s.corrupt.Store(true)
		return nil, fmt.Errorf("cache: get block %s from %s: %w (the file is damaged; it will be moved aside when the store is closed)", ref, s.path, err)
	case err != nil:
		return nil, fmt.Errorf("cache: get block %s from %s: %w", ref, s.path, err)
	}
	if err := ref.Verify(b); err != nil {
		return nil, s.damage(ref, err)
	}
	s.touch(ref)
	return b, nil
}

// getQuery reads a block's bytes.
const getQuery = `SELECT d.bytes FROM blocks b JOIN data d ON d.id = b.id WHERE b.ref = ?`

// prepareRead checks getQuery once, so that a bad schema fails OpenSQLite
// rather than the first read.
func (s *SQLite) prepareRead(ctx context.Context) error {
	st, err := s.rdb.PrepareContext(ctx, getQuery)
	if err != nil {
		return err
	}
	return st.Close()
}

// errNotBlob marks a stored value that is not bytes at all.
var errNotBlob = errors.New("not a blob")

// read returns the stored bytes of ref, unverified, or sql.ErrNoRows.
//
// It talks to the driver directly: database/sql's Scan would copy the 32
// KiB a second time (20% of a read, measured), while the bytes the driver
// returns are already a fresh copy out of SQLite (go-sqlite3 allocates each
// blob value with C.GoBytes), which driver.Rows lets the caller keep after
// Close. The driver caches the prepared statement per connection
// (_stmt_cache_size) when the query goes through the connection.
func (s *SQLite) read(ctx context.Context, ref eris.Ref) ([]byte, error) {
	conn, err := s.rdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var b []byte
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("driver connection is a %T", dc)
		}
		// QueryContext on the connection takes the statement from the
		// driver's cache (Prepare would compile it afresh: 9% of a
		// whole-tree read, measured) and returns it there on Close.
		rows, err := c.QueryContext(ctx, getQuery, []driver.NamedValue{{Ordinal: 1, Value: ref[:]}})
		if err != nil {
			return err
		}
		defer rows.Close()
		dest := []driver.Value{nil}
		switch err := rows.Next(dest); {
		case errors.Is(err, io.EOF):
			return sql.ErrNoRows
		case err != nil:
			return err
		}
		switch v := dest[0].(type) {
		case []byte:
			b = v
		case string: // a foreign write made it TEXT; the hash decides
			b = []byte(v)
		default:
			return fmt.Errorf("%w: %w: the stored value is %T, not bytes", errNotBlob, eris.ErrCorrupt, v)
		}
		return nil
	})
	return b, err
}

// damage deletes a stored copy that failed verification and returns the
// error GetBlock gives for it.
func (s *SQLite) damage(ref eris.Ref, verr error) error {
	var be *eris.BlockError
	if errors.As(verr, &be) && be.Ref == ref {
		verr = be.Err // the message names ref already
	}
	s.damaged.Add(1)
	s.log.Error("damaged block deleted from the cache", "ref", ref, "err", verr)
	s.enqueue(op{kind: opDelete, ref: ref})
	return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w, %w in %s and deleted: %v", eris.ErrNotFound, ErrDamaged, s.path, verr)}
}

// touch records that ref was read; the writer stores access times in
// batches.
func (s *SQLite) touch(ref eris.Ref) {
	t := s.clock.Add(1)
	s.mu.Lock()
	s.touched[ref] = t
	n := len(s.touched)
	s.mu.Unlock()
	if n >= 4*s.opts.MaxBatch {
		s.wakeWriter()
	}
}

// Has reports whether the block is stored (or accepted for storing),
// without reading or verifying it.
func (s *SQLite) Has(ctx context.Context, ref eris.Ref) (bool, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, s.closedError("has", ref)
	}
	_, ok := s.pending[ref]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	ok, err := s.hasStored(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("cache: has block %s in %s: %w", ref, s.path, err)
	}
	return ok, nil
}

func (s *SQLite) hasStored(ctx context.Context, ref eris.Ref) (bool, error) {
	var one int
	err := s.has.QueryRowContext(ctx, ref[:]).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// PutBlock accepts a copy of block for storing and returns; the writer
// commits it with others in one transaction (Flush waits for that). It
// trusts ref (eris.BlockPutter: the caller computed it) but refuses sizes
// that are not ERIS block sizes; reads verify. PutBlock waits while
// SQLiteOptions.MaxPending bytes are uncommitted, and fails with ErrFull
// when the hard cap leaves no room.
func (s *SQLite) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := checkSize(ref, block); err != nil {
		return fmt.Errorf("cache: put in %s: %w", s.path, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n := int64(len(block))
	if err := s.unavailable(ref); err != nil {
		return err
	}
	if s.isPending(ref) {
		return nil
	}
	if err := s.room.Acquire(ctx, n); err != nil {
		return err
	}
	if err := s.fit(ctx, ref, n); err != nil {
		s.room.Release(n)
		if errors.Is(err, errStored) {
			return nil
		}
		return err
	}
	data := bytes.Clone(block)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.room.Release(n)
		return s.closedError("put", ref)
	}
	if _, ok := s.pending[ref]; ok {
		s.mu.Unlock()
		s.room.Release(n)
		return nil
	}
	seq := s.enqueueLocked(op{kind: opPut, ref: ref, data: data})
	s.pending[ref] = pendingPut{data: data, seq: seq}
	s.pendingBytes += n
	s.mu.Unlock()
	s.wakeWriter()
	return nil
}

// unavailable refuses a put at once while the store cannot be written: in
// memory only, or degraded and within RetryInterval of the last failure.
// After that the put goes to the writer, whose transaction tells whether
// the disk has room again.
func (s *SQLite) unavailable(ref eris.Ref) error {
	why := ""
	switch {
	case s.memoryOnly:
		why = "its file could not be written when it was opened; this store is in memory only"
	case s.degraded.Load() && time.Since(time.Unix(0, s.lastFail.Load())) < s.opts.RetryInterval:
		why = "its last write failed (see the log); retrying shortly"
	default:
		return nil
	}
	s.refused.Add(1)
	return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: %s: %s; block not kept", ErrUnavailable, s.path, why)}
}

func (s *SQLite) isPending(ref eris.Ref) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pending[ref]
	return ok
}

// errStored tells PutBlock that the block is already in the file.
var errStored = errors.New("already stored")

// fit makes room for n more bytes under the hard cap. The common case is a
// comparison with the bytes stored at the last commit; near the cap it asks
// the writer to evict and looks again. ErrFull here means that every block
// left is pinned. Puts accepted but not yet committed are not counted: the
// writer enforces the cap again as it inserts, evicting or refusing (the
// refusal is then reported by Flush).
func (s *SQLite) fit(ctx context.Context, ref eris.Ref, n int64) error {
	hard := s.opts.HardCap
	stored := func() int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stored
	}
	if hard == Unlimited || stored()+n <= hard {
		return nil
	}
	if ok, err := s.hasStored(ctx, ref); err == nil && ok {
		return errStored
	}
	if err := s.sync(ctx, op{kind: opEvict, target: hard - n}); err != nil {
		return fmt.Errorf("cache: put block %s in %s: make room: %w", ref, s.path, err)
	}
	if st := stored(); st+n > hard {
		s.rejected.Add(1)
		return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: %s holds %d bytes of pinned blocks; its hard cap of %d bytes leaves no room for %d more",
			ErrFull, s.path, st, hard, n)}
	}
	return nil
}

// Delete removes a block and waits until the removal is committed. It is
// not an error if the block is absent. Pins keep their tag, so a block
// fetched again is pinned again.
func (s *SQLite) Delete(ctx context.Context, ref eris.Ref) error {
	if err := s.sync(ctx, op{kind: opDelete, ref: ref}); err != nil {
		return fmt.Errorf("cache: delete block %s from %s: %w", ref, s.path, err)
	}
	return nil
}

// Flush waits until every put accepted so far is committed, and returns
// the first write failure since the previous Flush (a failed transaction
// loses its blocks; later writes are unaffected). Access times gathered so
// far are written too.
func (s *SQLite) Flush(ctx context.Context) error {
	if err := s.sync(ctx, op{kind: opBarrier}); err != nil {
		return fmt.Errorf("cache: flush %s: %w", s.path, err)
	}
	s.mu.Lock()
	err, n := s.writeErr, s.writeErrs
	s.writeErr, s.writeErrs = nil, 0
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("cache: flush %s: %d writes failed, the first: %w", s.path, n, err)
	}
	return nil
}

// Close drops this process's mount pins, commits what was accepted, stops
// the writer and closes the file. It returns write failures not yet
// reported by Flush.
func (s *SQLite) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	mounts := make([]*Pin, 0, len(s.mounts))
	for p := range s.mounts {
		mounts = append(mounts, p)
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range mounts {
		errs = append(errs, p.Release(context.Background()))
	}
	errs = append(errs, s.Flush(context.Background()))
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.exit
	errs = append(errs, s.closeDB())
	if s.corrupt.Load() {
		// Found damaged while in use: replace it now, so the next
		// OpenSQLite starts fresh rather than failing on it.
		rep, err := moveAside(s.path, errors.New("SQLite reported the file damaged while in use"))
		if err != nil {
			errs = append(errs, fmt.Errorf("cache: move the damaged %s aside: %w", s.path, err))
		} else {
			rep.log(s.log)
		}
	}
	return errors.Join(errs...)
}

func (s *SQLite) closeDB() error {
	var errs []error
	if s.has != nil {
		errs = append(errs, s.has.Close())
	}
	errs = append(errs, s.wst.close())
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
	}
	for _, db := range []*sql.DB{s.wdb, s.rdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cache: close %s: %w", s.path, err)
	}
	return nil
}

func (s *SQLite) closedError(what string, ref eris.Ref) error {
	return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%s in %s: %w", what, s.path, ErrClosed)}
}

// SQLiteStats describe a store. Blocks, Bytes and the pin figures are read
// from the file, so they include other processes' writes; the counters
// count this process's work since OpenSQLite.
type SQLiteStats struct {
	Path          string
	Blocks, Bytes int64 // committed
	PendingBlocks int64 // accepted, not yet committed
	PendingBytes  int64
	SoftQuota     int64 // Unlimited if none
	HardCap       int64 // Unlimited if none
	Pins          int64 // pins of both kinds
	PinnedBlocks  int64 // stored blocks kept by at least one pin
	PinnedBytes   int64
	Evicted       int64 // blocks evicted
	Damaged       int64 // blocks found damaged and deleted
	Rejected      int64 // puts refused with ErrFull
	Commits       int64 // write transactions committed
	FailedCommits int64 // write transactions rolled back (a full disk, say)
	Refused       int64 // puts refused at once while degraded or in memory only (ErrUnavailable)
	// Degraded: the last write transaction failed, so fetched blocks are
	// not kept; the store goes on serving what it holds and tries again.
	Degraded bool
	// MemoryOnly: the file could not be written at open; this store is an
	// empty one in memory that keeps nothing.
	MemoryOnly bool
	// Replaced: the damaged file OpenSQLite moved aside, or nil.
	Replaced *Replaced `json:",omitempty"`
}

// Health are the counters and flags of Stats that cost nothing to read:
// for metrics at every scrape.
func (s *SQLite) Health() SQLiteStats {
	return SQLiteStats{
		Path:          s.path,
		SoftQuota:     s.opts.SoftQuota,
		HardCap:       s.opts.HardCap,
		Evicted:       s.evicted.Load(),
		Damaged:       s.damaged.Load(),
		Rejected:      s.rejected.Load(),
		Commits:       s.commits.Load(),
		FailedCommits: s.failed.Load(),
		Refused:       s.refused.Load(),
		Degraded:      s.memoryOnly || s.degraded.Load(),
		MemoryOnly:    s.memoryOnly,
		Replaced:      s.replaced,
	}
}

// Stats reads the store's figures. It costs a scan of the pinned
// references; call it for status and metrics, not per block.
func (s *SQLite) Stats(ctx context.Context) (SQLiteStats, error) {
	st := s.Health()
	s.mu.Lock()
	st.PendingBlocks, st.PendingBytes = int64(len(s.pending)), s.pendingBytes
	s.mu.Unlock()
	err := s.rdb.QueryRowContext(ctx, `SELECT blocks, bytes, (SELECT count(*) FROM pins),
		(SELECT count(*) FROM (SELECT DISTINCT ref FROM pinned) p JOIN blocks b ON b.ref = p.ref),
		(SELECT coalesce(sum(b.size), 0) FROM (SELECT DISTINCT ref FROM pinned) p JOIN blocks b ON b.ref = p.ref)
		FROM totals`).Scan(&st.Blocks, &st.Bytes, &st.Pins, &st.PinnedBlocks, &st.PinnedBytes)
	if err != nil {
		return st, fmt.Errorf("cache: stats of %s: %w", s.path, err)
	}
	return st, nil
}

// CheckResult is what Check found.
type CheckResult struct {
	Blocks, Bytes int64 // blocks that verified
	Damaged       int64 // blocks whose bytes did not hash to their reference (deleted)
	Missing       int64 // block rows without bytes (deleted)
}

// Check runs SQLite's integrity check, verifies every stored block against
// its reference, deletes the damaged ones, and compares the size totals
// with a recount. It reads the whole file: for repair and tests, not for
// routine use. A failed integrity check or wrong totals are errors.
func (s *SQLite) Check(ctx context.Context) (CheckResult, error) {
	var res CheckResult
	fail := func(err error) (CheckResult, error) {
		return res, fmt.Errorf("cache: check %s: %w", s.path, err)
	}
	rows, err := s.rdb.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fail(err)
	}
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			rows.Close()
			return fail(err)
		}
		msgs = append(msgs, m)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fail(err)
	}
	if len(msgs) != 1 || msgs[0] != "ok" {
		return fail(fmt.Errorf("integrity check: %s", strings.Join(msgs, "; ")))
	}
	rows, err = s.rdb.QueryContext(ctx, `SELECT b.ref, b.size, d.bytes FROM blocks b LEFT JOIN data d ON d.id = b.id`)
	if err != nil {
		return fail(err)
	}
	var bad []eris.Ref
	for rows.Next() {
		var (
			r    []byte
			size int64
			b    []byte
		)
		if err := rows.Scan(&r, &size, &b); err != nil {
			rows.Close()
			return fail(err)
		}
		ref, err := eris.RefFromBytes(r)
		if err != nil {
			rows.Close()
			return fail(err)
		}
		switch {
		case b == nil:
			res.Missing++
			bad = append(bad, ref)
		case ref.Verify(b) != nil || int64(len(b)) != size:
			res.Damaged++
			bad = append(bad, ref)
		default:
			res.Blocks++
			res.Bytes += size
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fail(err)
	}
	for _, ref := range bad {
		s.log.Error("damaged block deleted from the cache", "ref", ref, "by", "check")
		if err := s.Delete(ctx, ref); err != nil {
			return res, err
		}
	}
	s.damaged.Add(res.Damaged + res.Missing)
	var blocks, byts, count, sum int64
	err = s.rdb.QueryRowContext(ctx, `SELECT blocks, bytes, (SELECT count(*) FROM blocks), (SELECT coalesce(sum(size), 0) FROM blocks) FROM totals`).Scan(&blocks, &byts, &count, &sum)
	if err != nil {
		return fail(err)
	}
	if blocks != count || byts != sum {
		return fail(fmt.Errorf("totals say %d blocks of %d bytes, the table holds %d of %d", blocks, byts, count, sum))
	}
	return res, nil
}
