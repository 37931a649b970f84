// Package cache holds ERIS blocks locally, so that a mount is fast the second
// time and keeps working offline.
//
// Three stores, each an eris.BlockStore:
//
//   - Memory: a least-recently-used cache of verified blocks, bounded in
//     bytes (golang-lru/v2's simplelru under one mutex).
//   - SQLite: a persistent store in one SQLite file, by default at
//     DefaultPath ($XDG_CACHE_HOME/erismount/blocks.sqlite), with a soft
//     quota, a hard cap and pins.
//   - Tiered: memory → SQLite → a remote eris.BlockGetter (the fetcher's
//     pool), merging concurrent fetches of one block, verifying remote
//     blocks and writing them back to disk in the background.
//
// It does not fetch from peers (package fetcher) or decode content
// (package eris). Package cachetest is the conformance suite every
// eris.BlockStore runs.
//
//	disk, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: 10 << 30})
//	store := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(256 << 20), Disk: disk, Remote: pool})
//	pin, err := disk.PinMount(ctx, rc.URN()); r, err := eris.NewReader(ctx, rc, pin.View(store))
//
// Close in the reverse order: the Tiered store first (it writes its
// queued blocks back), then the SQLite store (it drops its mount pins).
//
// # Tiered
//
// A get asks memory, then disk, then Remote; a block found in a slower
// tier is put in the faster ones. Concurrent gets of one block that
// memory lacks share one fetch (see flight.go: like x/sync/singleflight,
// except that each caller may leave when its context ends, and the fetch
// is cancelled when the last one has left). Remote blocks are written to
// disk by one background goroutine through a bounded queue; when it is
// full the block is not written back rather than make the reader wait
// (TieredStats.WriteBackDropped). A memory hit also refreshes the block's
// access time on an *SQLite disk, so the disk does not evict what is hot
// in memory. TieredStats are plain counters for metrics.
//
// # Verification
//
// Every block that enters the process is checked against its reference once
// at the edge: Tiered verifies what Remote returns before keeping or
// returning it, and SQLite verifies what it reads back from the file. A copy
// on disk that no longer hashes to its reference (disk damage, a foreign
// write) is logged, counted (SQLiteStats.Damaged, TieredStats.DiskDamaged),
// deleted, and reported as missing (eris.ErrNotFound and ErrDamaged), so
// Tiered fetches it again. Puts are trusted, as eris.BlockPutter says (the
// caller computed the reference), but sizes other than 1 KiB and 32 KiB are
// refused. Memory holds only blocks that were verified or computed here.
//
// # SQLite layout and writes
//
// The file is in WAL mode with 16 KiB pages. Block metadata (reference,
// size, access time) and block bytes are separate tables: an access-time
// update must not rewrite 32 KiB, and the bytes sit in a rowid table, which
// reads large values several times faster than a table keyed by the
// 32-byte reference. The schema has a version (PRAGMA user_version) and
// forward migrations; a file of another program or of a newer erismount is
// refused with ErrNotStore or ErrNewerSchema. Reads run concurrently on a
// pool of read-only connections. Every change — puts, deletes, pin tags,
// evictions, access times — goes through one writer goroutine, which
// applies everything queued so far in one IMMEDIATE transaction (up to
// SQLiteOptions.MaxBatch blocks): while one batch commits the next one
// gathers. PutBlock returns once a block is accepted; it is served from
// memory until committed, and Flush waits for the commit. Access times of
// reads are gathered in memory and written in those transactions or every
// TouchInterval, not one write per read.
//
// Crash safety is SQLite's: a transaction is in the file or not at all.
// With synchronous=NORMAL in WAL mode a killed process loses nothing that
// was committed; a power failure may lose the last transactions but not
// consistency. Sizes are kept in a totals table by triggers in the same
// transactions, so the accounting is true after any crash and needs no
// scan at startup. Check runs PRAGMA integrity_check, verifies every block
// and compares the totals with a recount.
//
// # Quota and cap
//
// After each write transaction the least recently used unpinned blocks are
// evicted down to the soft quota. The hard cap is never exceeded: a put that
// would pass it evicts first, and fails with ErrFull when only pinned blocks
// are left. A store that is the content of a server (erismount serve,
// publish) is opened with SoftQuota Unlimited.
//
// With a hard cap of 4 MiB or more the cap also bounds the files on disk,
// database, -wal and -shm together (fileBudget): the WAL's share is an
// eighth of the cap (1 to 64 MiB; wal_autocheckpoint every 4 MiB or a
// quarter of the share, journal_size_limit, a TRUNCATE checkpoint after a
// commit that leaves it past half its share, and write transactions of at
// most a quarter of it), and the writer does not let the database file
// grow past the rest — counted in pages, as SQLite does, with pages on the
// freelist used first — evicting before it inserts. A small cap thus means
// smaller transactions and more checkpoints: puts into a store at a 20 MiB
// quota measured 1.2 to 1.6 times slower than with an unbounded WAL
// (BenchmarkSQLitePutEvicting, on a loaded machine).
//
// # Pins
//
// A pin is a name (a capability URN) and the set of references tagged with
// it; a block tagged by any pin is never evicted. Tagging happens as blocks
// pass through Pin.View (or Pin.Tag), so the tree of a capability is pinned
// by reading all of it through a view — which is what `erismount pin URN`
// does, then calls Tiered.Flush to know every block was kept. Tags are kept
// even for blocks not (yet) stored.
//
// SQLite.Pin returns a pin kept until SQLite.Unpin. SQLite.PinMount returns
// a pin held by this process, for a mounted root; erismount mount tags with
// it the blocks of the tree's index only, so that a tree larger than the
// cache does not fill it with pinned file blocks. Its owner records the
// PID, the PID's start time and the boot ID; Release, Close, or the next
// OpenSQLite after the process has gone (including a crash: the start time
// tells a reused PID apart) drops it with its tags. Pins lists both kinds.
//
// # Failures
//
// The cache holds nothing that cannot be fetched again except pins, so
// its failures do not stop the program. A write transaction that fails (a
// full disk, a quota, an I/O error) makes the store degraded: it says so
// once in the log (and at most every ten minutes while it lasts), counts
// the failures (SQLiteStats.FailedCommits, Refused, Degraded; Health reads
// them for metrics), keeps serving what it holds, and refuses puts at once
// with ErrUnavailable for RetryInterval after each failure; then a batch
// tries again. It is writable again, logged once, when a transaction that
// stored blocks commits with 4 MiB free on its file system — a commit
// alone does not tell, as small transactions fit in WAL space a failed one
// left allocated. Mount pins taken meanwhile and stale pins that could not
// be dropped are written then. Tiered logs failing write-backs and disk
// reads once per episode too.
//
// OpenSQLite does not fail for either: a store that cannot be written is
// opened as an empty store in memory for the run (MemoryOnly: puts are
// refused, pins are kept in memory), and a file SQLite finds damaged is
// moved aside as PATH.damaged-TIME with its -wal and -shm files, a fresh
// store started, and one ERROR line names the pins lost (Replaced). Damage
// SQLite reports while the store is in use degrades it, and the file is
// moved aside on Close.
package cache
