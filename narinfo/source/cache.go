package source

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"
	"golang.org/x/sync/singleflight"

	"erismount/narinfo"
)

// CacheOptions configure a Cache. Trust matters; the other zero values
// are useful.
type CacheOptions struct {
	// TTL is how long a narinfo found is kept; 0 means 36 hours, Guix's
	// default for narinfos without Cache-Control.
	TTL time.Duration
	// NegativeTTL is how long an unknown or untrusted item is remembered;
	// 0 means 10 minutes (Guix: a 404 without Cache-Control).
	NegativeTTL time.Duration
	// Scope names what the cache is in front of (e.g. the upstream URLs
	// in order): entries of another scope in the same file are not used.
	Scope string
	// StoreDir and Trust are checked again on every hit: a narinfo is
	// served from the cache only if it would be accepted now (a key
	// removed from the ACL takes effect at once).
	StoreDir string
	Trust    Trust
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives a line per narinfo stored; nil discards.
	Logger *slog.Logger
}

// CacheStats count what a Cache answered since it was opened.
type CacheStats struct {
	Hits         int64 // narinfos served from the cache
	NegativeHits int64 // unknown or untrusted answers served from the cache
	Misses       int64 // lookups passed on to the next Lookup
}

// Cache is a Lookup in front of next that remembers its answers in an
// SQLite file: narinfos found for TTL, unknown and untrusted items for
// NegativeTTL. Transport failures are not remembered. Concurrent lookups
// of one item ask next once.
type Cache struct {
	db     *sql.DB
	next   Lookup
	opts   CacheOptions
	log    *slog.Logger
	flight singleflight.Group

	hits, negHits, misses atomic.Int64
}

// States of a cache row.
const (
	stateFound     = 0
	stateUnknown   = 1
	stateUntrusted = 2
)

const cacheSchema = `
CREATE TABLE IF NOT EXISTS narinfos (
	scope     TEXT NOT NULL,
	hash_part TEXT NOT NULL,
	state     INTEGER NOT NULL,   -- 0 found, 1 unknown, 2 untrusted
	raw       BLOB,               -- the narinfo's bytes, as signed (found)
	locations TEXT,               -- its Locations, resolved, as JSON (found)
	origin    TEXT NOT NULL,      -- where the answer came from
	reason    TEXT NOT NULL,      -- why untrusted
	expires   INTEGER NOT NULL,   -- Unix nanoseconds
	PRIMARY KEY (scope, hash_part)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS narinfos_expires ON narinfos (expires);
`

// OpenCache opens (creating it if needed) the SQLite file path as a cache
// in front of next.
func OpenCache(path string, next Lookup, opts CacheOptions) (*Cache, error) {
	if opts.TTL <= 0 {
		opts.TTL = 36 * time.Hour
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 10 * time.Minute
	}
	if opts.StoreDir == "" {
		opts.StoreDir = "/gnu/store"
	}
	if opts.Trust.IsZero() {
		return nil, fmt.Errorf("source: narinfo cache: %w", ErrNoTrust)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("source: narinfo cache: %w", err)
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_busy_timeout=10000&_journal_mode=WAL&_synchronous=NORMAL")
	if err != nil {
		return nil, fmt.Errorf("source: narinfo cache %s: %w", path, err)
	}
	if _, err := db.Exec(cacheSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("source: narinfo cache %s: %w", path, err)
	}
	return &Cache{db: db, next: next, opts: opts, log: log}, nil
}

// Close closes the file.
func (c *Cache) Close() error { return c.db.Close() }

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), NegativeHits: c.negHits.Load(), Misses: c.misses.Load()}
}

// Narinfo answers from the file while the entry lives, else asks next and
// remembers the answer.
func (c *Cache) Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error) {
	if err := checkHashPart(hashPart, "the narinfo cache"); err != nil {
		return nil, err
	}
	if n, err, ok := c.get(ctx, hashPart); ok {
		return n, err
	}
	v, err, _ := c.flight.Do(hashPart, func() (any, error) {
		c.misses.Add(1)
		n, err := c.next.Narinfo(ctx, hashPart)
		c.put(ctx, hashPart, n, err)
		return n, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*narinfo.Narinfo), nil
}

// get returns the live entry of hashPart; ok is false when there is none
// (or it is no longer acceptable, or the file cannot be read).
func (c *Cache) get(ctx context.Context, hashPart string) (n *narinfo.Narinfo, err error, ok bool) {
	var (
		state          int
		raw            []byte
		locs           sql.NullString
		origin, reason string
	)
	row := c.db.QueryRowContext(ctx, `SELECT state, raw, locations, origin, reason FROM narinfos
		WHERE scope = ? AND hash_part = ? AND expires > ?`, c.opts.Scope, hashPart, c.opts.Now().UnixNano())
	if err := row.Scan(&state, &raw, &locs, &origin, &reason); err != nil {
		if !errors.Is(err, sql.ErrNoRows) {
			c.log.Warn("narinfo cache: read", "hash", hashPart, "err", err)
		}
		return nil, nil, false
	}
	switch state {
	case stateUnknown:
		c.negHits.Add(1)
		return nil, unknown(hashPart, origin+" (cached)"), true
	case stateUntrusted:
		c.negHits.Add(1)
		return nil, &UntrustedError{HashPart: hashPart, Origin: origin + " (cached)", Reason: errors.New(reason)}, true
	}
	n, err = Accept(raw, hashPart, c.opts.StoreDir, origin, c.opts.Trust)
	if err != nil {
		c.log.Info("narinfo cache: entry no longer accepted", "hash", hashPart, "err", err)
		return nil, nil, false
	}
	var l []narinfo.Location
	if err := json.Unmarshal([]byte(locs.String), &l); err != nil || len(l) != len(n.Locations) {
		c.log.Warn("narinfo cache: bad locations", "hash", hashPart, "err", err)
		return nil, nil, false
	}
	n.Locations = l
	c.hits.Add(1)
	return n, nil, true
}

// put remembers the answer of next: found, unknown or untrusted.
func (c *Cache) put(ctx context.Context, hashPart string, n *narinfo.Narinfo, lerr error) {
	now := c.opts.Now()
	var (
		state          int
		raw            []byte
		locs           sql.NullString
		origin, reason string
		ttl            = c.opts.NegativeTTL
	)
	var ue *UntrustedError
	switch {
	case lerr == nil:
		b, err := json.Marshal(n.Locations)
		if err != nil {
			return
		}
		state, raw, locs, ttl = stateFound, n.Raw(), sql.NullString{String: string(b), Valid: true}, c.opts.TTL
		if len(n.Locations) > 0 {
			origin = n.Locations[0].URL
		}
	case errors.As(lerr, &ue):
		state, origin, reason = stateUntrusted, ue.Origin, ue.Reason.Error()
	case errors.Is(lerr, ErrUnknown):
		state, origin = stateUnknown, "upstream"
	default:
		return // a transport failure: ask again next time
	}
	if ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx) // the answer is good; store it anyway
	}
	_, err := c.db.ExecContext(ctx, `INSERT OR REPLACE INTO narinfos
		(scope, hash_part, state, raw, locations, origin, reason, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		c.opts.Scope, hashPart, state, raw, locs, origin, reason, now.Add(ttl).UnixNano())
	if err != nil {
		c.log.Warn("narinfo cache: write", "hash", hashPart, "err", err)
	}
}

// HashParts lists the hash parts of the live, found entries of the
// cache's scope: the items it can answer for without asking upstream (the
// store view lists them). An entry is checked again when it is looked up.
func (c *Cache) HashParts(ctx context.Context) ([]string, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT hash_part FROM narinfos
		WHERE scope = ? AND state = ? AND expires > ? ORDER BY hash_part`, c.opts.Scope, stateFound, c.opts.Now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("source: narinfo cache: %w", err)
	}
	defer rows.Close()
	var hashes []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("source: narinfo cache: %w", err)
		}
		hashes = append(hashes, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source: narinfo cache: %w", err)
	}
	return hashes, nil
}

// Expire deletes the entries that have expired, and returns how many.
func (c *Cache) Expire(ctx context.Context) (int64, error) {
	res, err := c.db.ExecContext(ctx, `DELETE FROM narinfos WHERE expires <= ?`, c.opts.Now().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("source: narinfo cache: %w", err)
	}
	return res.RowsAffected()
}
