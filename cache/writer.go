package cache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"erismount/eris"
)

// maxBatchBytes bounds the block bytes of one write transaction; a small
// WAL bounds them further (SQLite.batchBytes).
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
	undo   func()               // if set, called when the transaction rolled back
	then   func()               // if set, called when the transaction committed
}

// writeStmts are prepared once on the writer's connection.
type writeStmts struct {
	insMeta, insData, touch, del, exists, tag, lru, pages *sql.Stmt
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
		// Pages in the file (in this transaction) and free pages in it.
		{&w.pages, `SELECT * FROM pragma_page_count(), pragma_freelist_count()`},
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
	for _, st := range []*sql.Stmt{w.insMeta, w.insData, w.touch, w.del, w.exists, w.tag, w.lru, w.pages} {
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
			if puts == s.opts.MaxBatch || (puts > 0 && size+len(o.data) > s.batchBytes) {
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
	tx := &writeTx{s: s, ctx: context.Background(), conn: s.wconn, st: &s.wst, pages: -1}
	err := tx.run(batch, touches, results)
	if err != nil {
		s.failed.Add(1)
		s.lastFail.Store(time.Now().UnixNano())
		s.degraded.Store(true)
		for _, o := range batch {
			if o.undo != nil {
				o.undo()
			}
		}
		err = fmt.Errorf("write transaction of %d operations in %s: %w", len(batch), s.path, err)
		switch {
		case s.opening.Load() && damagedFile(err):
			// OpenSQLite replaces the file and says so.
		case damagedFile(err) && !s.memoryOnly:
			s.corrupt.Store(true)
			s.writes.fail(s.log, slog.LevelError, "the block store file is damaged: serving from memory and peers; it will be moved aside when the store is closed", "err", err)
		default:
			s.writes.fail(s.log, slog.LevelWarn, "the block store cannot be written: serving from memory and peers, fetched blocks are not kept until it can (failures are counted in metrics)", "err", err)
		}
	} else {
		s.commits.Add(1)
		for _, o := range batch {
			if o.then != nil {
				o.then()
			}
		}
		s.evicted.Add(tx.evicted)
		if tx.evicted > 0 {
			s.log.Debug("evicted least recently used blocks", "blocks", tx.evicted, "bytes", tx.evictedBytes)
		}
		if s.degraded.Load() && tx.inserted > 0 && s.roomAgain() && s.writes.ok(s.log, "the block store can be written again") {
			s.degraded.Store(false)
			s.recovered()
		}
		s.checkpoint()
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
	pages        int64 // pages in the file when last counted, -1 before (see fits)
	grown        int64 // at most this many pages added since
	inserted     int   // blocks inserted
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
	need := pagesFor(n)
	fits, err := tx.fits(need)
	if err != nil {
		return nil, err
	}
	if hard := tx.s.opts.HardCap; hard != Unlimited && (tx.bytes+n > hard || !fits) {
		if err := tx.evict(hard - n); err != nil {
			return nil, err
		}
		err := tx.evictWhile(func() (bool, error) {
			f, err := tx.fits(need)
			return !f, err
		})
		if err != nil {
			return nil, err
		}
		if fits, err = tx.fits(need); err != nil {
			return nil, err
		}
		if tx.bytes+n > hard || !fits {
			var one int
			switch err := tx.st.exists.QueryRowContext(tx.ctx, ref[:]).Scan(&one); {
			case err == nil:
				return nil, nil
			case !errors.Is(err, sql.ErrNoRows):
				return nil, err
			}
			tx.s.rejected.Add(1)
			return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: hard cap of %d bytes reached in %s (pinned blocks fill it, or another process wrote meanwhile); block not stored", ErrFull, hard, tx.s.path)}, nil
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
	tx.grown += need
	tx.inserted++
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
	return tx.evictWhile(func() (bool, error) { return tx.bytes > target, nil })
}

// evictWhile deletes unpinned blocks, least recently used first, while more
// says so and unpinned blocks remain.
func (tx *writeTx) evictWhile(more func() (bool, error)) error {
	type victim struct {
		ref  eris.Ref
		size int64
	}
	for {
		if m, err := more(); err != nil || !m {
			return err
		}
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
		for i, v := range vs {
			if i > 0 {
				if m, err := more(); err != nil || !m {
					return err
				}
			}
			if err := tx.delete(v.ref); err != nil {
				return err
			}
			tx.evicted++
			tx.evictedBytes += v.size
		}
	}
}

// pagesFor bounds the pages a block of n bytes adds to the file: its bytes
// in overflow pages of pageSize-4 usable bytes, its rows, and a b-tree
// page split or two.
func pagesFor(n int64) int64 {
	return (n+256+pageSize-5)/(pageSize-4) + 2
}

// fits reports whether the file can take need more pages within the
// store's file budget. Pages on the freelist are used before the file
// grows. Until the budget is near, it counts from the page count read at
// the start of the transaction instead of asking SQLite again.
func (tx *writeTx) fits(need int64) (bool, error) {
	budget := tx.s.dbBudget
	if budget == Unlimited {
		return true, nil
	}
	if tx.pages >= 0 && (tx.pages+tx.grown+need)*pageSize <= budget {
		return true, nil
	}
	var pages, free int64
	if err := tx.st.pages.QueryRowContext(tx.ctx).Scan(&pages, &free); err != nil {
		return false, fmt.Errorf("count pages: %w", err)
	}
	tx.pages, tx.grown = pages, 0
	return (pages+max(need-free, 0))*pageSize <= budget, nil
}

// minFree is the free space a degraded store waits for on its file system
// before it counts itself writable again.
const minFree = 4 << 20

// roomAgain tells a degraded store whether the disk has room again, after
// a transaction that stored blocks committed. On a full disk small
// transactions can commit into WAL space that a failed one left allocated,
// so a commit alone would make the store flap between degraded and not;
// the free space of the file system decides (where it can be read: a
// quota that is full does not show there).
func (s *SQLite) roomAgain() bool {
	if s.memoryOnly {
		return false
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(s.file), &fs); err != nil {
		return true
	}
	return int64(fs.Bavail)*int64(fs.Bsize) >= minFree
}

// recovered runs when writes work again after failing: it retries what
// OpenSQLite could not do on a full disk (dropping stale mount pins) and
// records the mount pins taken meanwhile with the blocks they tagged.
func (s *SQLite) recovered() {
	s.enqueue(s.dropStalePins())
	s.mu.Lock()
	for p := range s.mounts {
		s.enqueueLocked(op{kind: opFunc, fn: p.record, undo: p.unrecord})
	}
	s.mu.Unlock()
}

// checkpoint keeps the -wal file within walLimit: after a commit that
// leaves it past half of that, it copies the WAL into the database and
// truncates it. Readers in the middle of a
// read make it wait (busy timeout); if it cannot finish, the next commit
// tries again, and SQLite's own checkpoints (wal_autocheckpoint) and
// journal_size_limit bound the WAL meanwhile.
func (s *SQLite) checkpoint() {
	if s.memoryOnly {
		return
	}
	fi, err := os.Stat(s.file + "-wal")
	if err != nil || fi.Size() <= s.walLimit/2 {
		return
	}
	var busy, frames, done int
	err = s.wconn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &done)
	if err != nil || busy != 0 {
		s.log.Debug("WAL checkpoint did not complete", "wal_bytes", fi.Size(), "frames", frames, "checkpointed", done, "err", err)
	}
}
