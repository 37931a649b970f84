// Package fetcher moves ERIS blocks between this process and untrusted
// peers: clients that get (and put) blocks over CoAP and HTTP, a Pool that
// fetches from many peers at once, and servers that serve any block store
// (specs/eris-transports.md).
//
// Transports, by URL:
//
//	coap://host[:5683][/store]      CoAP over UDP (RFC 7252), 32 KiB blocks block-wise (RFC 7959)
//	coap+tcp://host[:5683][/store]  CoAP over TCP (RFC 8323), a block per message
//	coap+unix:///path/to.sock       RFC 8323 framing on a Unix socket (Kapla's transport)
//	http[s]://host[:port][/prefix]  RFC 2169 N2R: GET <prefix>/uri-res/N2R?urn:blake2b:<REF>
//
// A CoAP store is at /.well-known/eris unless the URL names a path; its
// blocks are the resource <store>/blocks?<REF>, REF being the 52-character
// base32 reference (servers also accept the 32 raw octets). Missing blocks
// are 4.04 / 404. Uploads are PUT (or POST) to the same URL; the server
// stores a body only if it is 1024 or 32768 bytes and hashes to REF
// (Blake2b-256), and answers 2.01 / 201, or 4.00 / 400 (wrong hash or
// size), 4.13 / 413 (over 32 KiB), 4.05 / 405 (read-only server).
//
// Every block a client receives is verified against its reference before
// it is returned: a Peer's GetBlock returns only verified blocks, errors
// matching eris.ErrNotFound for missing ones, and *PeerError naming the
// peer for everything else. The Pool ranks peers by latency and failures,
// keeps a window of requests in flight per peer, hedges slow requests to
// the next peer, skips dead peers and probes them once per backoff period,
// and honours the caller's deadline.
//
// A CoAP-over-UDP server answers an address it has not verified with at
// most three times the bytes it received (RFC 9175 Echo, echo.go). Any
// node can serve what it holds (NewReadOnlyServer over its local tiers),
// be found on the local link (ServerOptions.Discoverable, Discover: CoAP
// multicast, RFC 7252 §8, with RFC 6690 link format) and add what it finds
// to its pool (Pool.AddPeer).
//
// The package does not cache blocks (see package cache) nor decode them
// (package eris).
//
//	p, err := fetcher.Dial(ctx, "coap://peer.example/.well-known/eris", fetcher.ClientOptions{})
//	pool := fetcher.NewPool([]fetcher.Peer{p}, fetcher.PoolOptions{})
//	block, err := pool.GetBlock(ctx, ref)
//
//	srv := fetcher.NewServer(store, fetcher.ServerOptions{AllowPut: true})
//	url, err := srv.Listen(ctx, "coap+tcp://127.0.0.1:0")
package fetcher
