package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/eris"
	"erismount/fetcher"
)

// nodeFlags are the flags of a command that serves what it holds while it
// runs (mount, pin): --listen, --relay.
type nodeFlags struct {
	relay bool
}

func (a *app) addNodeFlags(cmd *cobra.Command, f *nodeFlags) {
	a.addListenFlag(cmd, "also serve the blocks this node holds, read-only, on this URL (repeatable): coap://, coap+tcp://, coap+unix://, http://")
	cmd.Flags().BoolVar(&f.relay, "relay", false, "with --listen, answer a request for a block this node lacks by fetching it from its peers (default: 4.04)")
}

// listenNode serves the blocks src holds on every --listen URL until ctx
// ends or the returned server is closed; nil when there is no --listen.
// Only the store is read (never the peers) unless --relay is given. The
// server has serve's limits: per-listener workers, per-source state and
// the reflection check of CoAP over UDP.
func (a *app) listenNode(ctx context.Context, src *source, f nodeFlags) (*nodeServer, []string, error) {
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
	srv := &nodeServer{Server: fetcher.NewReadOnlyServer(held, fetcher.ServerOptions{Logger: a.log}), local: local}
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
	a.log.Info("serving the blocks this node holds", "urls", urls, "relay", f.relay)
	return srv, urls, nil
}

// nodeServer is the server of a node and the local view it serves.
type nodeServer struct {
	*fetcher.Server
	local *cache.Tiered
}

func (n *nodeServer) Close() error {
	return errors.Join(n.Server.Close(), n.local.Close())
}
