package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/narinfo/narsource"
	narinfosource "erismount/narinfo/source"
	"erismount/narinfo/subst"
)

// defaultSubstituteListen is where substitute-server listens without
// --listen: loopback only (guix publish's port, not its all-interfaces).
const defaultSubstituteListen = "127.0.0.1:8080"

func newSubstituteCmd(a *app) *cobra.Command {
	var (
		narinfoDir, keyPath, host, nixKeyPath, aclPath, storeDir string
		narinfoCache, narSource                                  string
		trustedNix, upstreams                                    []string
		unsigned, trustDir, wantMassQuery                        bool
		ttl, negativeTTL, upstreamTTL, upstreamNegativeTTL       time.Duration
		priority                                                 int
	)
	cmd := &cobra.Command{
		Use:   "substitute-server (--narinfo-dir DIR | --upstream URL…) (--key FILE | --nix-key FILE | --unsigned) (--acl FILE | --trusted-nix-key KEY | --trust-narinfo-dir)",
		Short: "Serve substitutes to unmodified Guix and Nix clients, nars made from ERIS-FS trees as they are read",
		Long: `Serve, over HTTP on loopback, the store items whose signed narinfos are in
--narinfo-dir (files <hash>.narinfo with an ERIS field, as "erismount publish
--narinfo-dir" writes them), the way "guix publish" does: /nix-cache-info,
/<hash>.narinfo, /nar/<basename>, /signing-key.pub. Each nar is the
serialization of the item's ERIS-FS tree, its blocks fetched as the client
reads — from the block store (--store, a cache) and the peers (--peer) —
every block verified, and the nar checked as it streams against the signed
NarHash and NarSize: if a block cannot be had or the bytes would not match,
the response is cut short and the client rejects it. A whole wrong nar is
never sent.

An upstream narinfo is served only if its signature is trusted: a Guix
signature by a key of --acl, or a Nix Sig by a --trusted-nix-key (or any, with
--trust-narinfo-dir). What is served keeps StorePath, NarHash, NarSize,
References, Deriver and ERIS, and says "URL: nar/<basename>", "Compression:
none", "FileSize: <NarSize>". Two ways for a client to accept it:

  signed with this server's key: --key (a Guix signing-key.sec; authorize its
    public key, served at /signing-key.pub, with "guix archive --authorize")
    and/or --nix-key (a Nix secret key; add the public key to
    trusted-public-keys);
  --unsigned: for Guix's equivalence rule — list this server before an
    authorized upstream in --substitute-urls, and Guix uses it for every item
    the upstream vouches for with the same NarHash, NarSize and References.

In front of existing substitute servers: --upstream URL (repeatable, tried in
order, after --narinfo-dir if given) looks narinfos up on demand as "guix
substitute" and Nix do (/nix-cache-info must state this --store-dir if it
exists, then /<hash>.narinfo), checks their signatures (--acl,
--trusted-nix-key; never --trust-narinfo-dir) and remembers the answers in an
SQLite file (--narinfo-cache; found for --upstream-ttl, unknown or untrusted
for --upstream-negative-ttl). A narinfo with a bad or untrusted signature is
never served.

Every nar comes from the cheapest source that works, chosen per item by the
bytes it would move (see --nar-source): the item's ERIS-FS tree (blocks held
in --store are free), or the upstream's nar at its URL — Compression none,
gzip, bzip2, xz, zstd or lzip — decompressed and checked as it streams. A
narinfo without an ERIS field makes the server a verifying, caching proxy of
the upstream's nars. A source that fails before the first byte went out gives
way to the next; when none can start the answer is HTTP 502 (504 if all timed
out) with a one-line reason. -v logs and --metrics name the source of every
nar and the bytes it moved.

For Nix, use --store-dir /nix/store. The listening URL is printed on stdout;
port 0 picks a free port. It runs until SIGINT or SIGTERM.`,
		Example: `  erismount substitute-server --narinfo-dir /srv/narinfo --key /etc/guix/signing-key.sec \
      --acl /etc/guix/acl --peer coap://192.0.2.7:5683
  guix build --substitute-urls="http://127.0.0.1:8080 https://ci.guix.gnu.org" /gnu/store/…-hello-2.12

  erismount substitute-server --store-dir /nix/store --narinfo-dir ./narinfo --nix-key ./key.sec \
      --trusted-nix-key publisher-1:… --listen 127.0.0.1:0 --peer coap://127.0.0.1:5683
  nix-store -r /nix/store/…-hello --option substituters http://127.0.0.1:PORT --option trusted-public-keys "$(cat key.pub)"

  erismount substitute-server --upstream https://ci.guix.gnu.org --upstream https://bordeaux.guix.gnu.org \
      --acl /etc/guix/acl --unsigned --peer coap://192.0.2.7:5683 -v`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if narinfoDir == "" && len(upstreams) == 0 {
				return usageError{errors.New("give --narinfo-dir, --upstream, or both")}
			}
			if narinfoDir != "" {
				if fi, err := os.Stat(narinfoDir); err != nil || !fi.IsDir() {
					return usageError{fmt.Errorf("--narinfo-dir %s: not a directory (%v)", narinfoDir, err)}
				}
			} else if trustDir {
				return usageError{errors.New("--trust-narinfo-dir needs --narinfo-dir (upstream narinfos are always checked)")}
			}
			force, err := narsource.ParseKind(narSource)
			if err != nil {
				return usageError{fmt.Errorf("--nar-source: %w", err)}
			}
			opts := subst.Options{StoreDir: storeDir, Host: host, TTL: ttl, NegativeTTL: negativeTTL,
				WantMassQuery: wantMassQuery, Priority: priority, Logger: a.log}
			if err := a.readSigningKeys(keyPath, nixKeyPath, &opts.Key, &opts.NixKey); err != nil {
				return err
			}
			if (opts.Key == nil && opts.NixKey == nil) != unsigned {
				return usageError{errors.New("give --key and/or --nix-key to sign what is served, or --unsigned (not both)")}
			}
			if opts.Host == "" {
				opts.Host, _ = os.Hostname()
			}
			trust, err := readTrust(aclPath, trustedNix, trustDir)
			if err != nil {
				return err
			}
			opts.StoreDir = storeDir
			client := narinfosource.NewClient()
			var look narinfosource.Chain
			if narinfoDir != "" {
				d, err := narinfosource.NewDir(narinfoDir, narinfosource.Options{StoreDir: storeDir, Trust: trust})
				if err != nil {
					return usageError{err}
				}
				look = append(look, d)
			}
			var cache *narinfosource.Cache
			if len(upstreams) > 0 {
				upTrust := trust
				upTrust.Any = false
				if upTrust.IsZero() {
					return usageError{errors.New("--upstream: say whose signatures to trust with --acl or --trusted-nix-key")}
				}
				var ups narinfosource.Chain
				for _, u := range upstreams {
					h, err := narinfosource.NewHTTP(u, narinfosource.Options{StoreDir: storeDir, Trust: upTrust, Client: client})
					if err != nil {
						return usageError{fmt.Errorf("--upstream: %w", err)}
					}
					ups = append(ups, h)
				}
				if narinfoCache != "off" {
					if narinfoCache == "" {
						if narinfoCache, err = a.narinfoCachePath(); err != nil {
							return err
						}
					}
					cache, err = narinfosource.OpenCache(narinfoCache, ups, narinfosource.CacheOptions{
						TTL: upstreamTTL, NegativeTTL: upstreamNegativeTTL, StoreDir: storeDir, Trust: upTrust,
						Scope: storeDir + " " + strings.Join(upstreams, " "), Logger: a.log})
					if err != nil {
						return usageError{fmt.Errorf("--narinfo-cache: %w", err)}
					}
					defer cache.Close()
					look = append(look, cache)
				} else {
					look = append(look, ups...)
				}
			}
			return a.substitute(ctx, look, cache, narsource.Options{Client: client, Force: force, Logger: a.log}, opts)
		},
	}
	a.addListenFlag(cmd, "host:port or http://host:port to serve on (repeatable; default "+defaultSubstituteListen+")")
	a.addMetricsFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&narinfoDir, "narinfo-dir", "", "directory of upstream signed narinfos, <hash>.narinfo")
	f.StringVar(&storeDir, "store-dir", "/gnu/store", "store served: /gnu/store (Guix) or /nix/store (Nix)")
	f.StringVar(&keyPath, "key", "", "Guix secret key (signing-key.sec) to sign served narinfos with")
	f.StringVar(&host, "host", "", "host part of the Guix Signature field (default: the host name)")
	f.StringVar(&nixKeyPath, "nix-key", "", "Nix secret key file to add a Sig to served narinfos")
	f.BoolVar(&unsigned, "unsigned", false, "serve narinfos unsigned, for Guix's equivalence rule")
	f.StringVar(&aclPath, "acl", "", "trust upstream narinfos signed by a key of this Guix ACL (e.g. /etc/guix/acl)")
	f.StringArrayVar(&trustedNix, "trusted-nix-key", nil, "trust upstream narinfos with a Sig by this Nix public key NAME:BASE64 (repeatable)")
	f.BoolVar(&trustDir, "trust-narinfo-dir", false, "serve every narinfo of --narinfo-dir without checking its signatures")
	f.DurationVar(&ttl, "ttl", 0, "Cache-Control max-age of narinfos (e.g. 36h; 0: none)")
	f.DurationVar(&negativeTTL, "negative-ttl", 0, "Cache-Control max-age of 404 answers to narinfo requests (0: none)")
	f.IntVar(&priority, "priority", 100, "Priority in /nix-cache-info (Nix prefers lower; cache.nixos.org is 40)")
	f.BoolVar(&wantMassQuery, "want-mass-query", false, "WantMassQuery: 1 in /nix-cache-info")
	f.StringArrayVar(&upstreams, "upstream", nil, "upstream substitute server URL to look narinfos up at (repeatable, tried in order)")
	f.StringVar(&narinfoCache, "narinfo-cache", "", "SQLite file remembering upstream narinfos (default: narinfo.sqlite beside --store; off: none)")
	f.DurationVar(&upstreamTTL, "upstream-ttl", 36*time.Hour, "how long an upstream narinfo is remembered")
	f.DurationVar(&upstreamNegativeTTL, "upstream-negative-ttl", 10*time.Minute, "how long an item unknown or untrusted upstream is remembered")
	f.StringVar(&narSource, "nar-source", "auto", "where nars come from: auto (the cheapest that works), tree, eris-nar or upstream")
	return cmd
}

// narinfoCachePath is narinfo.sqlite beside the block store.
func (a *app) narinfoCachePath() (string, error) {
	p := a.storePath
	if p == "" {
		var err error
		if p, err = cache.DefaultPath(); err != nil {
			return "", err
		}
	}
	return filepath.Join(filepath.Dir(p), "narinfo.sqlite"), nil
}

// readSigningKeys reads a Guix secret key file and a Nix secret key file,
// each when its path is set.
func (a *app) readSigningKeys(guixPath, nixPath string, guix **narinfo.PrivateKey, nix **narinfo.NixPrivateKey) error {
	if guixPath != "" {
		text, err := os.ReadFile(guixPath)
		if err != nil {
			return usageError{fmt.Errorf("--key: %w", err)}
		}
		k, err := narinfo.ParsePrivateKey(text)
		if err != nil {
			return usageError{fmt.Errorf("--key %s: %w", guixPath, err)}
		}
		*guix = k
	}
	if nixPath != "" {
		text, err := os.ReadFile(nixPath)
		if err != nil {
			return usageError{fmt.Errorf("--nix-key: %w", err)}
		}
		k, err := narinfo.ParseNixPrivateKey(string(text))
		if err != nil {
			return usageError{fmt.Errorf("--nix-key %s: %w", nixPath, err)}
		}
		*nix = &k
	}
	return nil
}

// readTrust builds the trust in upstream narinfos from the flags.
func readTrust(aclPath string, nixKeys []string, any bool) (narinfosource.Trust, error) {
	t := narinfosource.Trust{Any: any}
	if aclPath != "" {
		acl, err := readACL(aclPath)
		if err != nil {
			return t, err
		}
		t.ACL = acl
	}
	for _, s := range nixKeys {
		k, err := narinfo.ParseNixPublicKey(s)
		if err != nil {
			return t, usageError{fmt.Errorf("--trusted-nix-key: %w", err)}
		}
		t.NixKeys = append(t.NixKeys, k)
	}
	if t.ACL == nil && len(t.NixKeys) == 0 && !t.Any {
		return t, usageError{errors.New("say which upstream narinfos to trust: --acl, --trusted-nix-key or --trust-narinfo-dir")}
	}
	return t, nil
}

// substitute serves the narinfos of look on every --listen address until
// ctx ends, nars from the sources nopts (completed here with the blocks)
// chooses.
func (a *app) substitute(ctx context.Context, look narinfosource.Lookup, nc *narinfosource.Cache, nopts narsource.Options, opts subst.Options) (err error) {
	blocks, err := a.openSource(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, blocks.Close()) }()
	a.narSources(blocks, &nopts)
	srv, err := subst.NewServer(look, narsource.New(nopts), opts)
	if err != nil {
		return usageError{err}
	}
	listens := a.listens
	if len(listens) == 0 {
		listens = []string{defaultSubstituteListen}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if a.metrics != "" {
		ms := &metricSources{tiered: blocks.Tiered.Stats, subst: srv.Stats}
		if nc != nil {
			ms.narinfos = nc.Stats
		}
		if pool, ok := blocks.Remote.(*fetcher.Pool); ok {
			ms.peers = pool.Stats
		}
		if _, err := a.serveMetrics(ctx, a.metrics, ms); err != nil {
			return err
		}
	}
	var lns []net.Listener
	for _, l := range listens {
		addr := strings.TrimSuffix(strings.TrimPrefix(l, "http://"), "/")
		if u, err := url.Parse("http://" + addr); err != nil || u.Host != addr || u.Port() == "" {
			return usageError{fmt.Errorf("--listen %s: want host:port or http://host:port", l)}
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return usageError{fmt.Errorf("--listen %s: %w", l, err)}
		}
		lns = append(lns, ln)
	}
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- srv.Serve(ctx, ln) }()
		fmt.Fprintln(a.stdout, "http://"+ln.Addr().String())
	}
	a.log.Info("serving substitutes until SIGINT or SIGTERM", "store_dir", opts.StoreDir)
	for range lns {
		if e := <-errs; e != nil && err == nil {
			err = e
			cancel() // one listener failed: stop the others
		}
	}
	st := srv.Stats()
	a.log.Info("substitute server stopped", "narinfos", st.Narinfos, "nars", st.Nars, "aborted", st.NarsAborted, "failed", st.NarsFailed, "bytes", st.NarBytes)
	for k, v := range st.Sources {
		a.log.Info("nar source", "source", k, "nars", v.Nars, "aborted", v.Aborted, "failed", v.Failed, "moved", v.Moved, "sent", v.Sent)
	}
	return err
}

// narSources completes the nar sources' options with the block path: the
// tiered store for blocks, its SQLite store for what is held, the pool's
// byte counters for what moved.
func (a *app) narSources(blocks *source, o *narsource.Options) {
	o.Blocks = blocks
	o.Local = blocks.Store
	o.Has = blocks.Store.Has
	if pool, ok := blocks.Remote.(*fetcher.Pool); ok {
		o.RemoteBytes = func() int64 {
			var n uint64
			for _, p := range pool.Stats() {
				n += p.Bytes
			}
			return int64(n)
		}
	}
}
