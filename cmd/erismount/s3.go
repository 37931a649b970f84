package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"erismount/cache"
	"erismount/cache/s3"
	"erismount/eris"
	"erismount/fetcher"
)

// s3CheckTimeout bounds the first request to a bucket (is it there, are
// the keys good) of publish and serve.
const s3CheckTimeout = 30 * time.Second

// openS3 opens the bucket at an s3:// URL. With check it asks the service
// at once whether the bucket is there and the keys are good, so that
// publish and serve fail at the start with a clear error rather than on
// the first block.
func (a *app) openS3(ctx context.Context, raw string, check bool) (*s3.Store, error) {
	st, err := s3.Open(raw, s3.Options{Logger: a.log})
	if errors.Is(err, s3.ErrBadURL) {
		return nil, usageError{err}
	}
	if err != nil {
		return nil, err
	}
	if check {
		cctx, cancel := context.WithTimeout(ctx, s3CheckTimeout)
		defer cancel()
		if err := st.Check(cctx); err != nil {
			st.Close()
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("%s: no answer within %v: %w", st.URL(), s3CheckTimeout, err)
			}
			return nil, err
		}
	}
	a.log.Debug("block store in a bucket", "url", st.URL())
	return st, nil
}

// logS3 logs what the store cost in requests (at -v).
func (a *app) logS3(st *s3.Store) {
	s := st.Stats()
	a.log.Info("s3 requests", "store", st.URL(), "GET", s.GETs, "PUT", s.PUTs, "HEAD", s.HEADs, "other", s.Other,
		"sent_bytes", s.BytesSent, "received_bytes", s.BytesReceived, "blocks_got", s.Blocks, "uploaded", s.Uploaded,
		"already_there", s.Present, "not_found", s.NotFound, "corrupt", s.Corrupt, "errors", s.Errors)
}

// dialPeer is fetcher.Dial, and a bucket for an s3:// URL: a *s3.Store is
// a fetcher.Peer (it verifies every block it returns).
func (a *app) dialPeer(ctx context.Context, raw string) (fetcher.Peer, error) {
	if s3.IsURL(raw) {
		st, err := a.openS3(ctx, raw, false)
		if err != nil {
			return nil, err
		}
		return s3Peer{st, a}, nil
	}
	return fetcher.Dial(ctx, raw, fetcher.ClientOptions{Logger: a.log})
}

// s3Peer logs the store's requests when the pool closes it.
type s3Peer struct {
	*s3.Store
	a *app
}

func (p s3Peer) Close() error {
	p.a.logS3(p.Store)
	return p.Store.Close()
}

// contentStore is where publish writes: a SQLite store or a bucket.
type contentStore interface {
	eris.BlockStore
	// Flush returns once every block written so far is stored.
	Flush(ctx context.Context) error
	Close() error
}

// openContent opens the store publish writes to: --store FILE (returned
// also as local, to pin what is published) or --store s3://… (local is
// nil: a bucket never evicts), written with many uploads in flight.
func (a *app) openContent(ctx context.Context) (store contentStore, local *cache.SQLite, err error) {
	if !s3.IsURL(a.storePath) {
		s, err := a.openStore(ctx, roleContent)
		return s, s, err
	}
	st, err := a.openS3(ctx, a.storePath, true)
	if err != nil {
		return nil, nil, err
	}
	return &s3Content{Uploader: st.NewUploader(0), st: st, a: a}, nil, nil
}

// s3Content is a bucket written through an uploader.
type s3Content struct {
	*s3.Uploader
	st *s3.Store
	a  *app
}

func (c *s3Content) Close() error {
	err := c.Uploader.Close()
	c.a.logS3(c.st)
	return errors.Join(err, c.st.Close())
}

// openServed opens what serve serves: the SQLite store, or a bucket behind
// a memory tier and, with --cache-store, a SQLite tier (evicted down to
// --cache-size). Any number of serve processes may front one bucket: they
// share nothing but it. ms has the tiers' and the bucket's counters.
func (a *app) openServed(ctx context.Context, cacheStore string) (store eris.BlockStore, closeStore func() error, ms *metricSources, err error) {
	if !s3.IsURL(a.storePath) {
		if cacheStore != "" {
			return nil, nil, nil, usageError{errors.New("--cache-store goes with --store s3://…: a SQLite store is served as it is")}
		}
		s, err := a.openStore(ctx, roleContent)
		if err != nil {
			return nil, nil, nil, err
		}
		return s, s.Close, &metricSources{}, nil
	}
	st, err := a.openS3(ctx, a.storePath, true)
	if err != nil {
		return nil, nil, nil, err
	}
	opts := cache.TieredOptions{Memory: cache.NewMemory(defaultMemoryCache), Remote: st, Logger: a.log}
	var disk *cache.SQLite
	if cacheStore != "" {
		sopts := cache.SQLiteOptions{Logger: a.log}
		if a.cacheSize != "" {
			if sopts.SoftQuota, err = parseSize(a.cacheSize); err != nil {
				st.Close()
				return nil, nil, nil, usageError{fmt.Errorf("--cache-size: %w", err)}
			}
		}
		if disk, err = cache.OpenSQLite(cacheStore, sopts); err != nil {
			st.Close()
			return nil, nil, nil, err
		}
		opts.Disk = disk
	}
	front := &s3Front{Tiered: cache.NewTiered(opts), st: st}
	return front, func() error {
		err := front.Tiered.Close()
		if disk != nil {
			err = errors.Join(err, disk.Close())
		}
		a.logS3(st)
		return errors.Join(err, st.Close())
	}, &metricSources{tiered: front.Tiered.Stats, s3: st}, nil
}

// s3Front reads through the tiers and writes to the bucket first (then
// the tiers), so that an upload a serve process accepted (--allow-put) is
// in the bucket, seen by every other process, when it answers.
type s3Front struct {
	*cache.Tiered
	st *s3.Store
}

// GetBlock answers "not found" for an object that is not its block (the
// store logged it): the server holds no good copy, as a SQLite store with
// a damaged copy says, so a client asks its other peers instead of taking
// this server for broken.
func (f *s3Front) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	b, err := f.Tiered.GetBlock(ctx, ref)
	if errors.Is(err, eris.ErrCorrupt) {
		return nil, &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: the object in the bucket is damaged", eris.ErrNotFound)}
	}
	return b, err
}

func (f *s3Front) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := f.st.PutBlock(ctx, ref, block); err != nil {
		return err
	}
	return f.Tiered.PutBlock(ctx, ref, block)
}
