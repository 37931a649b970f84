package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/eris"
	"erismount/fetcher"
)

// nodeFlags are the flags of a command that serves what it holds while it
// runs (mount, pin): --listen, --relay, --discover (in app: the pool needs
// it before the command runs).
type nodeFlags struct {
	relay bool
}

func (a *app) addNodeFlags(cmd *cobra.Command, f *nodeFlags) {
	a.addListenFlag(cmd, "also serve the blocks this node holds, read-only, on this URL (repeatable): coap://, coap+tcp://, coap+unix://, http://")
	cmd.Flags().BoolVar(&f.relay, "relay", false, "with --listen, answer a request for a block this node lacks by fetching it from its peers (default: 4.04)")
	cmd.Flags().BoolVar(&a.discover, "discover", false, "find ERIS block stores on the local link (CoAP multicast) and fetch from them too; with --listen on coap://0.0.0.0 or coap://[::], also answer others' discovery")
}

// discoverEvery is how often a node asks the local link for stores again.
const discoverEvery = 10 * time.Second

// discover asks the local link for block stores now and every
// discoverEvery until ctx ends or the returned stop is called, and adds
// every store found to the pool. self are the node's own listen URLs.
func (a *app) discoverPeers(ctx context.Context, pool *fetcher.Pool, self []string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	round := func() {
		found, err := fetcher.Discover(ctx, fetcher.DiscoverOptions{Self: self, Logger: a.log})
		if err != nil {
			a.log.Warn("discovery", "err", err)
		}
		for _, u := range found {
			p, err := fetcher.Dial(ctx, u, fetcher.ClientOptions{Logger: a.log})
			if err != nil {
				continue
			}
			if pool.AddPeer(p) {
				a.log.Info("discovered a peer", "peer", u)
			}
		}
	}
	round() // before the first read
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(discoverEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				round()
			}
		}
	}()
	return func() {
		cancel()
		<-done
		for _, st := range pool.Stats() {
			a.log.Info("peer totals", "peer", st.URL, "requests", st.Requests, "hedges", st.Hedges, "blocks", st.Blocks, "bytes", st.Bytes, "not_found", st.NotFound, "errors", st.Errors, "probes", st.Probes)
		}
	}
}

// listenNode serves the blocks src holds on every --listen URL until ctx
// ends or the returned server is closed; nil when there is no --listen.
// Only the store is read (never the peers) unless --relay is given. The
// server has serve's limits: per-listener workers, per-source state and
// the reflection check of CoAP over UDP.
func (a *app) listenNode(ctx context.Context, src *source, f nodeFlags) (*nodeServer, []string, error) {
	var stopDiscovery func()
	pool, _ := src.Remote.(*fetcher.Pool)
	if a.discover && pool != nil && len(a.listens) == 0 {
		stopDiscovery = a.discoverPeers(ctx, pool, nil)
		return &nodeServer{stopDiscovery: stopDiscovery}, nil, nil
	}
	if len(a.listens) == 0 {
		if f.relay {
			return nil, nil, usageError{errors.New("--relay needs --listen")}
		}
		return nil, nil, nil
	}
	// What the node holds: its memory and disk tiers, without the peers.
	local := cache.NewTiered(cache.TieredOptions{Memory: src.Memory, Disk: src.Store, Logger: a.log})
	var held eris.BlockGetter = local
	if f.relay {
		held = src.Tiered
	}
	srv := &nodeServer{Server: fetcher.NewReadOnlyServer(held, fetcher.ServerOptions{Logger: a.log, Discoverable: a.discover}), local: local, log: a.log}
	var urls []string
	for _, l := range a.listens {
		u, err := srv.Listen(ctx, l)
		if err != nil {
			srv.Close()
			if errors.Is(err, fetcher.ErrBadURL) {
				return nil, nil, usageError{fmt.Errorf("--listen: %w", err)}
			}
			return nil, nil, err
		}
		urls = append(urls, u)
	}
	a.log.Info("serving the blocks this node holds", "urls", urls, "relay", f.relay, "discoverable", a.discover)
	if a.discover && pool != nil {
		srv.stopDiscovery = a.discoverPeers(ctx, pool, urls)
	}
	return srv, urls, nil
}

// nodeServer is the server of a node, the local view it serves, and its
// discovery of others; each part may be missing.
type nodeServer struct {
	*fetcher.Server
	local         *cache.Tiered
	stopDiscovery func()
	log           *slog.Logger
}

func (n *nodeServer) Close() error {
	if n.stopDiscovery != nil {
		n.stopDiscovery()
	}
	var err error
	if n.Server != nil {
		err = errors.Join(n.Server.Close(), n.local.Close())
		st := n.Server.Stats()
		n.log.Info("node served", "requests", st.Gets, "blocks", st.Blocks, "bytes", st.Bytes, "sent", st.Sent, "not_found", st.NotFound, "echo_challenges", st.EchoChallenges, "discoveries", st.Discoveries)
	}
	return err
}

// Stats are the server's counters (zero without a server).
func (n *nodeServer) Stats() fetcher.ServerStats {
	if n.Server == nil {
		return fetcher.ServerStats{}
	}
	return n.Server.Stats()
}
