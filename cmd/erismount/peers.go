package main

import (
	"context"
	"fmt"

	"erismount/eris"
	"erismount/fetcher"
)

// remote is where missing blocks come from: the pool of --peer peers.
type remote interface {
	eris.BlockGetter
	Close() error
}

// openRemote dials every --peer into a pool; nil (and no error) when there
// is none, which means "offline: from the store only".
func (a *app) openRemote(ctx context.Context) (remote, error) {
	pool, err := a.openPool(ctx)
	if pool == nil {
		return nil, err
	}
	return pool, err
}

// openPool dials every --peer; nil when there is none (and no
// --discover, whose peers join the pool later).
func (a *app) openPool(ctx context.Context) (*fetcher.Pool, error) {
	if len(a.peers) == 0 && !a.discover {
		return nil, nil
	}
	peers := make([]fetcher.Peer, 0, len(a.peers))
	for _, u := range a.peers {
		p, err := a.dialPeer(ctx, u)
		if err != nil {
			for _, q := range peers {
				q.Close()
			}
			return nil, usageError{fmt.Errorf("--peer %s: %w", u, err)}
		}
		peers = append(peers, p)
	}
	return fetcher.NewPool(peers, fetcher.PoolOptions{Logger: a.log}), nil
}
