package cache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"erismount/eris"
)

// A Pin keeps blocks in an SQLite store: a block tagged by any pin is never
// evicted. Blocks are tagged one by one as they pass through View (or by
// Tag), so pinning a capability means reading it all through a view.
//
// A pin from SQLite.Pin is kept until Unpin, across restarts. A pin from
// SQLite.PinMount belongs to this process: Release, Close of the store, or
// the next OpenSQLite after the process has died drops it with its tags.
//
// A Pin is safe for concurrent use.
type Pin struct {
	s     *SQLite
	id    int64
	name  string
	owner string // "" for a kept pin

	mu       sync.Mutex
	seen     map[eris.Ref]struct{} // tagged by this handle
	released bool
	recorded bool // by record, in a transaction not yet known to have committed
}

// Pin returns the pin called name, creating it if needed, kept until Unpin.
// The name is normally the capability's URN.
func (s *SQLite) Pin(ctx context.Context, name string) (*Pin, error) {
	return s.newPin(ctx, name, "")
}

// PinMount returns a new pin called name that lasts as long as this process
// holds it: for a mounted root. Each call gives a separate pin; Release it
// when the mount ends.
func (s *SQLite) PinMount(ctx context.Context, name string) (*Pin, error) {
	return s.newPin(ctx, name, selfOwner().String())
}

func (s *SQLite) newPin(ctx context.Context, name, owner string) (*Pin, error) {
	if name == "" {
		return nil, fmt.Errorf("cache: pin in %s: empty name", s.path)
	}
	p := &Pin{s: s, name: name, owner: owner, seen: make(map[eris.Ref]struct{})}
	err := s.sync(ctx, op{kind: opFunc, fn: func(tx *writeTx) error {
		id, err := p.create(tx)
		p.id = id
		return err
	}})
	if err != nil && owner != "" && unwritable(err) {
		// A mount goes on without its pin on a full disk: nothing it
		// fetches is kept now anyway. The pin is recorded, with what it
		// tagged meanwhile, once the store can be written (recovered).
		s.log.Warn("mount pin not recorded: the store cannot be written; it will be once it can", "name", name, "err", err)
		p.id = 0
		s.mu.Lock()
		s.mounts[p] = struct{}{}
		s.mu.Unlock()
		return p, nil
	}
	if err != nil {
		if owner != "" {
			// The pin may still be created after ctx ended: drop it
			// then. The writer runs this after the creation, so p.id
			// is set by then (or 0, which drops nothing).
			s.enqueue(op{kind: opFunc, fn: func(tx *writeTx) error { return dropPin(tx.ctx, tx.conn, p.id) }})
		}
		return nil, fmt.Errorf("cache: pin %q in %s: %w", name, s.path, err)
	}
	if owner != "" {
		s.mu.Lock()
		s.mounts[p] = struct{}{}
		s.mu.Unlock()
	}
	return p, nil
}

// create inserts the pin's row (or finds it) in tx and returns its id.
func (p *Pin) create(tx *writeTx) (int64, error) {
	_, err := tx.conn.ExecContext(tx.ctx, `INSERT INTO pins(name, owner, created) VALUES(?, ?, ?) ON CONFLICT(name, owner) DO NOTHING`,
		p.name, p.owner, time.Now().Unix())
	if err != nil {
		return 0, err
	}
	var id int64
	err = tx.conn.QueryRowContext(tx.ctx, `SELECT id FROM pins WHERE name = ? AND owner = ?`, p.name, p.owner).Scan(&id)
	return id, err
}

// record writes a mount pin that could not be written when it was taken,
// with the references it tagged since; it runs in the writer once writes
// work again. unrecord undoes it if that transaction rolls back.
func (p *Pin) record(tx *writeTx) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.id != 0 || p.released {
		return nil
	}
	id, err := p.create(tx)
	if err != nil {
		return err
	}
	for ref := range p.seen {
		if _, err := tx.st.tag.ExecContext(tx.ctx, ref[:], id); err != nil {
			return err
		}
	}
	p.id, p.recorded = id, true
	return nil
}

func (p *Pin) unrecord() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recorded {
		p.id, p.recorded = 0, false
	}
}

// Name is the name the pin was created with.
func (p *Pin) Name() string { return p.name }

// Tag marks ref as kept by the pin. The tag is written with the next batch;
// a block may be tagged before it is stored.
func (p *Pin) Tag(ref eris.Ref) {
	p.mu.Lock()
	if _, ok := p.seen[ref]; ok || p.released {
		p.mu.Unlock()
		return
	}
	p.seen[ref] = struct{}{}
	id := p.id
	p.mu.Unlock()
	if id != 0 { // else the pin is not recorded yet: record tags it
		p.s.enqueue(op{kind: opTag, ref: ref, pin: id})
	}
}

// Release ends this handle. A mount pin is dropped with its tags, which
// makes its blocks evictable again (unless another pin holds them); a kept
// pin stays (see SQLite.Unpin).
func (p *Pin) Release(ctx context.Context) error {
	p.mu.Lock()
	done := p.released
	p.released = true
	p.seen = nil
	p.mu.Unlock()
	if done || p.owner == "" {
		return nil
	}
	p.s.mu.Lock()
	delete(p.s.mounts, p)
	p.s.mu.Unlock()
	err := p.s.sync(ctx, op{kind: opFunc, fn: func(tx *writeTx) error { return dropPin(tx.ctx, tx.conn, p.id) }})
	if err != nil {
		return fmt.Errorf("cache: release mount pin %q in %s: %w", p.name, p.s.path, err)
	}
	return nil
}

// View returns a store that reads and writes through next and tags with the
// pin every block it returns or stores successfully.
func (p *Pin) View(next eris.BlockStore) eris.BlockStore { return pinView{p: p, next: next} }

type pinView struct {
	p    *Pin
	next eris.BlockStore
}

func (v pinView) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	b, err := v.next.GetBlock(ctx, ref)
	if err == nil {
		v.p.Tag(ref)
	}
	return b, err
}

func (v pinView) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	err := v.next.PutBlock(ctx, ref, block)
	if err == nil {
		v.p.Tag(ref)
	}
	return err
}

// Unpin drops the kept pin called name and its tags; the blocks become
// evictable unless another pin holds them. Mount pins are not affected. An
// unknown name gives an error matching ErrUnknownPin.
func (s *SQLite) Unpin(ctx context.Context, name string) error {
	found := false
	err := s.sync(ctx, op{kind: opFunc, fn: func(tx *writeTx) error {
		var id int64
		err := tx.conn.QueryRowContext(tx.ctx, `SELECT id FROM pins WHERE name = ? AND owner = ''`, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return dropPin(tx.ctx, tx.conn, id)
	}})
	switch {
	case err != nil:
		return fmt.Errorf("cache: unpin %q in %s: %w", name, s.path, err)
	case !found:
		return fmt.Errorf("cache: unpin %q in %s: %w", name, s.path, ErrUnknownPin)
	}
	return nil
}

// execer is what dropPin needs from a connection or transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func dropPin(ctx context.Context, c execer, id int64) error {
	if _, err := c.ExecContext(ctx, `DELETE FROM pinned WHERE pin = ?`, id); err != nil {
		return err
	}
	_, err := c.ExecContext(ctx, `DELETE FROM pins WHERE id = ?`, id)
	return err
}

// PinInfo describes one pin.
type PinInfo struct {
	Name    string
	Mount   bool   // a mount pin, held by a running process
	Owner   string // the holding process of a mount pin ("pid=… start=… boot=…")
	Created time.Time
	Tagged  int64 // references tagged, stored or not
	Blocks  int64 // tagged blocks that are stored
	Bytes   int64
}

// Pins lists the pins, kept and mount, by name.
func (s *SQLite) Pins(ctx context.Context) ([]PinInfo, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT p.name, p.owner, p.created, count(t.ref), count(b.ref), coalesce(sum(b.size), 0)
		FROM pins p LEFT JOIN pinned t ON t.pin = p.id LEFT JOIN blocks b ON b.ref = t.ref
		GROUP BY p.id ORDER BY p.name, p.owner`)
	if err != nil {
		return nil, fmt.Errorf("cache: list pins in %s: %w", s.path, err)
	}
	defer rows.Close()
	var pins []PinInfo
	for rows.Next() {
		var (
			pi      PinInfo
			created int64
		)
		if err := rows.Scan(&pi.Name, &pi.Owner, &created, &pi.Tagged, &pi.Blocks, &pi.Bytes); err != nil {
			return nil, fmt.Errorf("cache: list pins in %s: %w", s.path, err)
		}
		pi.Mount = pi.Owner != ""
		pi.Created = time.Unix(created, 0)
		pins = append(pins, pi)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cache: list pins in %s: %w", s.path, err)
	}
	return pins, nil
}

// dropStalePins returns the op that drops the mount pins of processes that
// are gone, in the writer's transaction: at open, and again once writes
// work if they did not then.
func (s *SQLite) dropStalePins() op {
	type mount struct {
		id          int64
		name, owner string
	}
	var stale []mount
	fn := func(tx *writeTx) error {
		stale = stale[:0]
		rows, err := tx.conn.QueryContext(tx.ctx, `SELECT id, name, owner FROM pins WHERE owner != ''`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var m mount
			if err := rows.Scan(&m.id, &m.name, &m.owner); err != nil {
				rows.Close()
				return err
			}
			o, err := parseOwner(m.owner)
			if err == nil && o.alive() {
				continue
			}
			stale = append(stale, m)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		for _, m := range stale {
			if err := dropPin(tx.ctx, tx.conn, m.id); err != nil {
				return err
			}
		}
		return nil
	}
	then := func() {
		for _, m := range stale {
			s.log.Info("dropped the mount pin of a process that is gone", "name", m.name, "owner", m.owner)
		}
	}
	return op{kind: opFunc, fn: fn, then: then}
}
