package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"erismount/fetcher"
)

// defaultListen is where serve listens without --listen: CoAP over UDP on
// loopback only, since a store URL may act as a capability.
const defaultListen = "coap://127.0.0.1:5683"

func newServeCmd(a *app) *cobra.Command {
	var allowPut bool
	var cacheStore, rate string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the blocks of the store over CoAP (UDP, TCP, Unix socket) and HTTP",
		Long: `serve makes the blocks of the SQLite store (--store) available to peers, as
eris-go and Kapla do, until SIGINT or SIGTERM:

  coap://HOST:PORT[/PATH]       CoAP over UDP; 32 KiB blocks go block-wise (RFC 7959)
  coap+tcp://HOST:PORT[/PATH]   CoAP over TCP (RFC 8323)
  coap+unix:///PATH.sock        CoAP with RFC 8323 framing on a Unix socket
  http://HOST:PORT[/PREFIX]     ERIS over HTTP: GET PREFIX/uri-res/N2R?urn:blake2b:REF

A CoAP store lives at /.well-known/eris unless the URL names another path;
a block is GET STORE/blocks?REF (REF: the 52-character base32 reference).
Missing blocks are 4.04 / 404. Port 0 picks a free port; each address served
is printed on stdout. Without --listen it serves ` + defaultListen + `.

With --allow-put, PUT or POST of a block to the same URL stores it, once its
size (1024 or 32768 bytes) and its Blake2b-256 hash (the reference) are
checked: a wrong hash or size is 4.00 / 400, a body over 32 KiB 4.13 / 413.
The store is never evicted by serve.

With --store s3://BUCKET/PREFIX serve reads the blocks from an S3-compatible
bucket (see "erismount help publish" for the URL), keeping what it served in
memory and, with --cache-store FILE, in a SQLite cache bounded by
--cache-size. Such a server keeps no state of its own: any number of them
can front one bucket. Each block is verified as it comes out of the bucket.`,
		Example: `  erismount serve --store blocks.sqlite --listen coap://0.0.0.0:5683 --listen coap+tcp://0.0.0.0:5683
  erismount serve --listen coap+unix:///run/erismount/blocks.sock --listen http://127.0.0.1:8080
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… erismount serve --store 's3://blocks/eris?endpoint=http://10.0.0.5:9000' \
      --cache-store /var/cache/erismount/front.sqlite --cache-size 50GiB --listen coap+tcp://0.0.0.0:5683
  coap-client-notls -m get 'coap://127.0.0.1:5683/.well-known/eris/blocks?REF' -o block`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serve(cmd.Context(), allowPut, cacheStore, rate)
		},
	}
	a.addListenFlag(cmd, "URL to serve on (repeatable): coap://, coap+tcp://, coap+unix://, http://")
	cmd.Flags().BoolVar(&allowPut, "allow-put", false, "accept PUT/POST of blocks (each verified before it is stored)")
	addUploadRateFlag(cmd, &rate)
	cmd.Flags().StringVar(&cacheStore, "cache-store", "", "with --store s3://…: a SQLite cache of served blocks in front of the bucket")
	a.addMetricsFlag(cmd)
	return cmd
}

// serve runs the block servers over the store until ctx ends (SIGINT or
// SIGTERM), then stops every listener and closes the store.
func (a *app) serve(ctx context.Context, allowPut bool, cacheStore, rateFlag string) (err error) {
	rate, err := uploadRate(rateFlag)
	if err != nil {
		return err
	}
	listens := a.listens
	if len(listens) == 0 {
		listens = []string{defaultListen}
	}
	store, closeStore, ms, err := a.openServed(ctx, cacheStore)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeStore()) }()
	srv := fetcher.NewServer(store, fetcher.ServerOptions{AllowPut: allowPut, Logger: a.log, MaxUploadRate: rate})
	defer func() { err = errors.Join(err, srv.Close()) }()
	if a.metrics != "" {
		ms.server = srv.Stats
		if _, err := a.serveMetrics(ctx, a.metrics, ms); err != nil {
			return err
		}
	}
	for _, l := range listens {
		u, err := srv.Listen(ctx, l)
		if errors.Is(err, fetcher.ErrBadURL) {
			return usageError{fmt.Errorf("--listen: %w", err)}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, u)
	}
	a.log.Info("serving blocks until SIGINT or SIGTERM", "store", a.storePath, "put", allowPut, "max_upload_rate", rate)
	<-ctx.Done()
	return nil
}
