package main

import (
	"context"
	"errors"

	"erismount/eris"
)

// remote is where missing blocks come from: the pool of --peer peers.
type remote interface {
	eris.BlockGetter
	Close() error
}

// openRemote dials every --peer; nil (and no error) when there is none,
// which means "offline: from the store only".
func (a *app) openRemote(ctx context.Context) (remote, error) {
	if len(a.peers) == 0 {
		return nil, nil
	}
	// Replaced by the fetcher.Pool wiring as soon as package fetcher lands.
	return nil, usageError{errors.New("--peer: peers are not wired in yet")}
}
