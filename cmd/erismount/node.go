package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/fetcher"
)

// nodeFlags are the flags of a command that serves what it holds while it
// runs (mount, pin): --listen, --relay, --max-upload-rate, --discover (in
// app: the pool needs it before the command runs).
type nodeFlags struct {
	relay      string
	uploadRate string
}

// The values of --relay.
const (
	relayNone  = "none"  // serve what is held, 4.04 for the rest
	relayOwned = "owned" // also fetch the blocks this node owns in its swarm
	relayAll   = "all"   // also fetch any block asked for
)

func (a *app) addNodeFlags(cmd *cobra.Command, f *nodeFlags) {
	a.addListenFlag(cmd, "also serve the blocks this node holds, read-only, on this URL (repeatable): coap://, coap+tcp://, coap+unix://, http://")
	cmd.Flags().StringVar(&f.relay, "relay", "", "with --listen, answer a request for a block this node lacks by fetching it from its peers: none (4.04), owned (the blocks this node owns among its discovered neighbours; the default with --discover), all (any block; --relay alone); give a value as --relay=owned")
	cmd.Flags().Lookup("relay").NoOptDefVal = relayAll
	addUploadRateFlag(cmd, &f.uploadRate)
	cmd.Flags().BoolVar(&a.discover, "discover", false, "find ERIS block stores on the local link (CoAP multicast) and fetch from them too; with --listen on coap://0.0.0.0 or coap://[::], also answer others' discovery and share the fetching of blocks with the nodes found (see --relay)")
}

// addUploadRateFlag adds --max-upload-rate to a command that serves.
func addUploadRateFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "max-upload-rate", "", "cap the block bytes sent to peers, over every --listen: bits a second (20Mbit, 500kbit) or bytes a second (2.5MiB, 300K); default no cap")
}

// uploadRate reads --max-upload-rate: bytes a second, 0 for none.
func uploadRate(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	r, err := parseRate(v)
	if err != nil {
		return 0, usageError{fmt.Errorf("--max-upload-rate %w", err)}
	}
	return r, nil
}

// parseRate reads a rate: bits a second with a decimal prefix, as links
// are rated (20Mbit, 1.5Gbit, 500kbit, 64000bit), or bytes a second as
// parseSize reads sizes (2.5MiB, 300K, 1048576); an optional "/s" ends
// either (20Mbit/s, 2.5MiB/s). Below a byte a second is an error.
func parseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	lower := strings.ToLower(t)
	if strings.HasSuffix(lower, "/s") {
		t, lower = t[:len(t)-2], lower[:len(lower)-2]
	}
	if !strings.HasSuffix(lower, "bit") {
		n, err := parseSize(t)
		if err != nil {
			return 0, fmt.Errorf("%q: want a rate such as 20Mbit or 2.5MiB (a second)", s)
		}
		return n, nil
	}
	num := strings.TrimSpace(t[:len(t)-3])
	mult := 1.0
	if n := len(num); n > 0 {
		if i := strings.IndexByte("kmgt", strings.ToLower(num[n-1:])[0]); i >= 0 {
			mult = math.Pow(1000, float64(i+1))
			num = num[:n-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	bytes := f * mult / 8
	if err != nil || !(bytes >= 1) || bytes > 1<<62 {
		return 0, fmt.Errorf("%q: want a rate such as 20Mbit or 2.5MiB (a second), at least 8bit", s)
	}
	return int64(bytes), nil
}

// relayMode resolves --relay: owned with --discover unless told, none
// without.
func (a *app) relayMode(f nodeFlags) (string, error) {
	switch f.relay {
	case "":
		if a.discover {
			return relayOwned, nil
		}
		return relayNone, nil
	case relayNone, relayOwned, relayAll:
		return f.relay, nil
	}
	return "", usageError{fmt.Errorf("--relay %q: want none, owned or all", f.relay)}
}

// discoverFirst is how long a node waits before asking the local link
// for stores a second time; the wait doubles up to discoverEvery, how
// often it asks from then on. Nodes started together find each other in
// the first seconds, when they share the most.
const (
	discoverFirst = time.Second
	discoverEvery = 10 * time.Second
)

// discover asks the local link for block stores now and every
// discoverEvery until ctx ends or the returned stop is called, and adds
// every store found to the pool. self are the node's own listen URLs.
func (a *app) discoverPeers(ctx context.Context, pool *fetcher.Pool, self []string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	round := func() {
		found, err := fetcher.DiscoverNodes(ctx, fetcher.DiscoverOptions{Self: self, Logger: a.log})
		if err != nil {
			a.log.Warn("discovery", "err", err)
		}
		for _, d := range found {
			if d.Node == pool.Node() {
				continue // this node, heard on another address
			}
			dial := fetcher.Dial
			if !d.Node.IsZero() {
				dial = fetcher.DialNeighbour
			}
			p, err := dial(ctx, d.URL, fetcher.ClientOptions{Logger: a.log})
			if err != nil {
				continue
			}
			if pool.AddNeighbour(p, d.Node) {
				a.log.Info("discovered a peer", "peer", d.URL, "node", d.Node)
			}
		}
	}
	round() // before the first read
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait := discoverFirst
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
				round()
			}
			wait = min(2*wait, discoverEvery)
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
	relay, err := a.relayMode(f)
	if err != nil {
		return nil, nil, err
	}
	rate, err := uploadRate(f.uploadRate)
	if err != nil {
		return nil, nil, err
	}
	if len(a.listens) == 0 {
		switch {
		case f.relay != "":
			return nil, nil, usageError{errors.New("--relay needs --listen")}
		case f.uploadRate != "":
			return nil, nil, usageError{errors.New("--max-upload-rate needs --listen")}
		case a.discover && pool != nil:
			stopDiscovery = a.discoverPeers(ctx, pool, nil)
			return &nodeServer{stopDiscovery: stopDiscovery}, nil, nil
		}
		return nil, nil, nil
	}
	// What the node holds: its memory and disk tiers, without the peers.
	local := cache.NewTiered(cache.TieredOptions{Memory: src.Memory, Disk: src.Store, Logger: a.log})
	served := &fetcher.Relay{Local: local}
	switch {
	case relay == relayAll:
		served.Remote = src.Tiered
	case relay == relayOwned && pool != nil:
		served.Remote, served.Owns = src.Tiered, pool.Owns
	}
	opts := fetcher.ServerOptions{Logger: a.log, Discoverable: a.discover, MaxUploadRate: rate}
	if pool != nil {
		opts.Node = pool.Node()
	}
	srv := &nodeServer{Server: fetcher.NewReadOnlyServer(served, opts), local: local, log: a.log}
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
	a.log.Info("serving the blocks this node holds", "urls", urls, "relay", relay, "discoverable", a.discover, "max_upload_rate", rate, "node", opts.Node)
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
