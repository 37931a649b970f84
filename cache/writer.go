package cache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"erismount/eris"
)

// maxBatchBytes bounds the block bytes of one write transaction.
const maxBatchBytes = 32 << 20

type opKind uint8

const (
	opPut     opKind = iota // insert data under ref
	opTag                   // tag ref with pin
	opDelete                // delete ref
	opEvict                 // evict unpinned blocks down to target bytes
	opFunc                  // run fn in the transaction
	opBarrier               // nothing: Flush waits for it
)

// op is one write, queued for the writer goroutine. Ops are applied in
// the order they were queued.
type op struct {
	kind   opKind
	seq    uint64
	ref    eris.Ref
	data   []byte
	pin    int64
	target int64
	fn     func(*writeTx) error // SQL errors only: they roll the batch back
	res    *error               // if set, receives the op's result before done advances
}

// writeStmts are prepared once on the writer's connection.
type writeStmts struct {
	insMeta, insData, touch, del, exists, tag, lru *sql.Stmt
}

func (w *writeStmts) prepare(ctx context.Context, c *sql.Conn) error {
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&w.insMeta, `INSERT INTO blocks(ref, id, size, atime) VALUES(?, ?, ?, ?) ON CONFLICT(ref) DO NOTHING`},
		{&w.insData, `INSERT INTO data(id, bytes) VALUES(?, ?)`},
		{&w.touch, `UPDATE blocks SET atime = ? WHERE ref = ?`},
		{&w.del, `DELETE FROM blocks WHERE ref = ? RETURNING size`},
		{&w.exists, `SELECT 1 FROM blocks WHERE ref = ?`},
		// A tag for a pin dropped meanwhile must not outlive it.
		{&w.tag, `INSERT OR IGNORE INTO pinned(ref, pin) SELECT ?, id FROM pins WHERE id = ?`},
		{&w.lru, `SELECT ref, size FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM pinned p WHERE p.ref = b.ref) ORDER BY atime LIMIT 256`},
	} {
		st, err := c.PrepareContext(ctx, p.q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.q, err)
		}
		*p.st = st
	}
	return nil
}

func (w *writeStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{w.insMeta, w.insData, w.touch, w.del, w.exists, w.tag, w.lru} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// enqueueLocked appends o to the queue; s.mu is held.
func (s *SQLite) enqueueLocked(o op) uint64 {
	s.seq++
	o.seq = s.seq
	s.queue = append(s.queue, o)
	return s.seq
}

// enqueue queues an op nobody waits for; after Close it is dropped.
func (s *SQLite) enqueue(o op) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.enqueueLocked(o)
	s.mu.Unlock()
	s.wakeWriter()
}

// sync queues o and waits until it is committed (or failed).
func (s *SQLite) sync(ctx context.Context, o op) error {
	var res error
	o.res = &res
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	seq := s.enqueueLocked(o)
	s.mu.Unlock()
	s.wakeWriter()
	for {
		s.mu.Lock()
		if s.done >= seq {
			s.mu.Unlock()
			break
		}
		ch := s.doneCh
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return res
}

func (s *SQLite) wakeWriter() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine: it owns the write connection.
func (s *SQLite) run() {
	defer close(s.exit)
	tick := time.NewTicker(s.opts.TouchInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.wake:
			s.drain(false)
		case <-tick.C:
			s.drain(true)
		case <-s.stop:
			s.drain(true)
			return
		}
	}
}

// drain writes until the queue is empty. Operations queued while a
// transaction commits form the next batch: that is the group commit.
// Access times ride along with operations; alone they are written only
// when touches says so (on the tick, at the end) or when many gathered.
func (s *SQLite) drain(touches bool) {
	for {
		batch, times := s.take(touches)
		if len(batch) == 0 && len(times) == 0 {
			return
		}
		s.write(batch, times)
	}
}

// take removes the next batch from the queue and, with it, the access
// times gathered so far.
func (s *SQLite) take(touches bool) ([]op, map[eris.Ref]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	puts, size, i := 0, 0, 0
	for ; i < len(s.queue) && i < 4*s.opts.MaxBatch; i++ {
		if o := &s.queue[i]; o.kind == opPut {
			if puts == s.opts.MaxBatch || (puts > 0 && size+len(o.data) > maxBatchBytes) {
				break
			}
			puts++
			size += len(o.data)
		}
	}
	batch := slices.Clone(s.queue[:i])
	clear(s.queue[:i]) // let the block bytes go
	if s.queue = s.queue[i:]; len(s.queue) == 0 {
		s.queue = nil
	}
	var times map[eris.Ref]int64
	if n := len(s.touched); n > 0 && (len(batch) > 0 || touches || n >= 4*s.opts.MaxBatch) {
		times, s.touched = s.touched, make(map[eris.Ref]int64)
	}
	return batch, times
}

// write applies one batch in one transaction and reports the results.
func (s *SQLite) write(batch []op, touches map[eris.Ref]int64) {
	results := make([]error, len(batch))
	tx := &writeTx{s: s, ctx: context.Background(), conn: s.wconn, st: &s.wst}
	err := tx.run(batch, touches, results)
	if err != nil {
		s.failed.Add(1)
		err = fmt.Errorf("write transaction of %d operations in %s: %w", len(batch), s.path, err)
		s.log.Error("cache write failed; its blocks are not stored", "err", err)
	} else {
		s.commits.Add(1)
		s.evicted.Add(tx.evicted)
		if tx.evicted > 0 {
			s.log.Debug("evicted least recently used blocks", "blocks", tx.evicted, "bytes", tx.evictedBytes)
		}
	}
	var release int64
	s.mu.Lock()
	for i, o := range batch {
		if o.kind == opPut {
			if p, ok := s.pending[o.ref]; ok && p.seq == o.seq {
				delete(s.pending, o.ref)
				s.pendingBytes -= int64(len(o.data))
			}
			release += int64(len(o.data))
		}
		res := results[i]
		if err != nil {
			res = err
		}
		switch {
		case o.res != nil:
			*o.res = res
		case res != nil:
			if s.writeErr == nil {
				s.writeErr = res
			}
			s.writeErrs++
		}
	}
	if err == nil {
		s.stored = tx.bytes
	}
	if len(batch) > 0 {
		s.done = batch[len(batch)-1].seq
		close(s.doneCh)
		s.doneCh = make(chan struct{})
	}
	s.mu.Unlock()
	if release > 0 {
		s.room.Release(release)
	}
}

// writeTx is one write transaction on the writer's connection.
type writeTx struct {
	s    *SQLite
	ctx  context.Context
	conn *sql.Conn
	st   *writeStmts

	bytes        int64 // stored bytes, as the totals table says plus changes so far
	lastID       int64 // largest data id in use
	evicted      int64
	evictedBytes int64
}

func (tx *writeTx) exec(q string) error {
	_, err := tx.conn.ExecContext(tx.ctx, q)
	return err
}

func (tx *writeTx) run(batch []op, touches map[eris.Ref]int64, results []error) (err error) {
	// IMMEDIATE takes the write lock now, so the totals and ids read below
	// stay true even if another process shares the file.
	if err := tx.exec("BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.exec("ROLLBACK")
		}
	}()
	err = tx.conn.QueryRowContext(tx.ctx, `SELECT bytes, (SELECT coalesce(max(id), 0) FROM data) FROM totals`).Scan(&tx.bytes, &tx.lastID)
	if err != nil {
		return err
	}
	for ref, t := range touches {
		if _, err := tx.st.touch.ExecContext(tx.ctx, t, ref[:]); err != nil {
			return fmt.Errorf("update access time: %w", err)
		}
	}
	for i := range batch {
		o := &batch[i]
		switch o.kind {
		case opPut:
			results[i], err = tx.put(o.ref, o.data)
		case opTag:
			_, err = tx.st.tag.ExecContext(tx.ctx, o.ref[:], o.pin)
		case opDelete:
			err = tx.delete(o.ref)
		case opEvict:
			err = tx.evict(o.target)
		case opFunc:
			err = o.fn(tx)
		}
		if err != nil {
			return err
		}
	}
	if q := tx.s.opts.SoftQuota; q != Unlimited && tx.bytes > q {
		if err := tx.evict(q); err != nil {
			return err
		}
	}
	return tx.exec("COMMIT")
}

// put inserts a block unless it is stored already. A block the hard cap
// has no room for, even after eviction, is refused: rejected says so.
func (tx *writeTx) put(ref eris.Ref, data []byte) (rejected, err error) {
	n := int64(len(data))
	if hard := tx.s.opts.HardCap; hard != Unlimited && tx.bytes+n > hard {
		if err := tx.evict(hard - n); err != nil {
			return nil, err
		}
		if tx.bytes+n > hard {
			var one int
			switch err := tx.st.exists.QueryRowContext(tx.ctx, ref[:]).Scan(&one); {
			case err == nil:
				return nil, nil
			case !errors.Is(err, sql.ErrNoRows):
				return nil, err
			}
			tx.s.rejected.Add(1)
			return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: hard cap of %d bytes reached in %s (another process wrote meanwhile?); block not stored", ErrFull, hard, tx.s.path)}, nil
		}
	}
	id := tx.lastID + 1
	res, err := tx.st.insMeta.ExecContext(tx.ctx, ref[:], id, n, tx.s.clock.Add(1))
	if err != nil {
		return nil, fmt.Errorf("insert block %s: %w", ref, err)
	}
	if k, err := res.RowsAffected(); err != nil || k == 0 {
		return nil, err // already stored
	}
	if _, err := tx.st.insData.ExecContext(tx.ctx, id, data); err != nil {
		return nil, fmt.Errorf("insert block %s: %w", ref, err)
	}
	tx.lastID = id
	tx.bytes += n
	return nil, nil
}

// delete removes ref if stored; a trigger removes its bytes.
func (tx *writeTx) delete(ref eris.Ref) error {
	var size int64
	switch err := tx.st.del.QueryRowContext(tx.ctx, ref[:]).Scan(&size); {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("delete block %s: %w", ref, err)
	}
	tx.bytes -= size
	return nil
}

// evict deletes unpinned blocks, least recently used first, until at most
// target bytes are stored or only pinned blocks remain.
func (tx *writeTx) evict(target int64) error {
	type victim struct {
		ref  eris.Ref
		size int64
	}
	for tx.bytes > target {
		rows, err := tx.st.lru.QueryContext(tx.ctx)
		if err != nil {
			return fmt.Errorf("evict: %w", err)
		}
		var vs []victim
		for rows.Next() {
			var (
				r []byte
				v victim
			)
			if err := rows.Scan(&r, &v.size); err != nil {
				rows.Close()
				return fmt.Errorf("evict: %w", err)
			}
			copy(v.ref[:], r)
			vs = append(vs, v)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("evict: %w", err)
		}
		if len(vs) == 0 {
			return nil // the rest is pinned
		}
		for _, v := range vs {
			if tx.bytes <= target {
				break
			}
			if err := tx.delete(v.ref); err != nil {
				return err
			}
			tx.evicted++
			tx.evictedBytes += v.size
		}
	}
	return nil
}
