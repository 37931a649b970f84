package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"
)

// unwritable reports whether err means the store's files cannot be written
// now — the disk or a quota is full, the file system is read-only or
// failing — rather than that the store is wrong: the cache then goes on
// without its disk tier (see SQLite's degraded mode in doc.go).
func unwritable(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrFull, sqlite3.ErrIoErr, sqlite3.ErrReadonly, sqlite3.ErrCantOpen:
			return true
		}
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO)
}

// damagedFile reports whether SQLite found the file's structure broken
// ("database disk image is malformed", "file is not a database").
func damagedFile(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrCorrupt || se.Code == sqlite3.ErrNotADB)
}

// remindEvery is how often a failure that goes on is logged again.
const remindEvery = 10 * time.Minute

// episode logs a run of repeated failures of one kind once when it starts,
// once when it ends, and at most every remindEvery in between, so that a
// full disk under a busy mount gives a few lines, not one per block. An
// episode that starts within remindEvery of the last line is not logged,
// nor is its end: a cause that comes and goes (a disk on the edge of full)
// does not flood the log either. The failures themselves are counted by
// the caller, for metrics.
type episode struct {
	on      atomic.Bool // failing; read without the lock on hot paths
	mu      sync.Mutex
	failing bool
	logged  bool      // this episode's start was logged
	n       int64     // failures since the last line
	total   int64     // failures in this episode
	last    time.Time // when a failure was last logged
}

// fail records one failure and logs it if it starts an episode or the last
// line is older than remindEvery.
func (e *episode) fail(log *slog.Logger, level slog.Level, msg string, args ...any) {
	e.mu.Lock()
	e.n++
	e.total++
	now := time.Now()
	due := e.last.IsZero() || now.Sub(e.last) >= remindEvery
	start := !e.failing
	if start {
		e.failing, e.logged, e.total = true, false, 1
		e.on.Store(true)
	}
	if !due {
		e.mu.Unlock()
		return
	}
	n := e.n
	still := e.logged
	e.last, e.n, e.logged = now, 0, true
	e.mu.Unlock()
	if still {
		msg += " (still)"
	}
	if still || n > 1 {
		args = append(args, "failures", n)
	}
	log.Log(context.Background(), level, msg, args...)
}

// ok ends an episode, logging msg if its start was logged. It reports
// whether an episode was going on.
func (e *episode) ok(log *slog.Logger, msg string, args ...any) bool {
	if !e.on.Load() {
		return false
	}
	e.mu.Lock()
	if !e.failing {
		e.mu.Unlock()
		return false
	}
	logged, total := e.logged, e.total
	e.failing, e.logged = false, false
	e.on.Store(false)
	e.mu.Unlock()
	if logged {
		log.Info(msg, append(args, "failures", total)...)
	}
	return true
}
