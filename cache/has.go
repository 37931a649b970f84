package cache

import (
	"context"
	"fmt"
	"strings"

	"erismount/eris"
)

// hasBatch is how many references one query of HasBlocks asks about
// (SQLite allows 32766 host parameters; a few hundred keep a query short).
const hasBatch = 500

// HasBlocks reports, for each of refs, whether the store holds the block
// (or has accepted it for storing), without reading or verifying any: one
// query per hasBatch references instead of one per block. It is how a
// reader of a whole tree finds, before it starts, the few blocks it must
// fetch from elsewhere.
func (s *SQLite) HasBlocks(ctx context.Context, refs []eris.Ref) ([]bool, error) {
	held := make([]bool, len(refs))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: has blocks in %s: %w", s.path, ErrClosed)
	}
	for i, ref := range refs {
		_, held[i] = s.pending[ref]
	}
	s.mu.Unlock()
	at := make(map[eris.Ref][]int, len(refs))
	args := make([]any, 0, hasBatch)
	var q strings.Builder
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		q.Reset()
		q.WriteString("SELECT ref FROM blocks WHERE ref IN (?")
		q.WriteString(strings.Repeat(",?", len(args)-1))
		q.WriteString(")")
		rows, err := s.rdb.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return err
			}
			if len(b) != len(eris.Ref{}) {
				continue
			}
			for _, i := range at[eris.Ref(b)] {
				held[i] = true
			}
		}
		args = args[:0]
		clear(at)
		return rows.Err()
	}
	for i, ref := range refs {
		if held[i] {
			continue
		}
		if _, dup := at[ref]; !dup {
			args = append(args, ref[:])
		}
		at[ref] = append(at[ref], i)
		if len(args) == hasBatch {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("cache: has blocks in %s: %w", s.path, err)
			}
		}
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("cache: has blocks in %s: %w", s.path, err)
	}
	return held, nil
}

// HasBlocks reports, for each of refs, whether memory or the disk holds
// the block, without reading any; the remote is not asked. A disk without
// HasBlocks counts as holding nothing.
func (t *Tiered) HasBlocks(ctx context.Context, refs []eris.Ref) ([]bool, error) {
	held := make([]bool, len(refs))
	var rest []eris.Ref
	var restAt []int
	for i, ref := range refs {
		if t.mem != nil && t.mem.Has(ref) {
			held[i] = true
			continue
		}
		rest = append(rest, ref)
		restAt = append(restAt, i)
	}
	d, ok := t.disk.(interface {
		HasBlocks(context.Context, []eris.Ref) ([]bool, error)
	})
	if !ok || len(rest) == 0 {
		return held, nil
	}
	on, err := d.HasBlocks(ctx, rest)
	if err != nil {
		return nil, err
	}
	for k, i := range restAt {
		held[i] = on[k]
	}
	return held, nil
}
