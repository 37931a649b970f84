package fetcher

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"erismount/eris"
)

// Peer is a remote block store: a CoAP or HTTP endpoint holding blocks.
//
// GetBlock verifies every block (size and Blake2b-256 against the
// reference) before returning it; a missing block is an error matching
// eris.ErrNotFound, and every error is a *PeerError naming the peer.
type Peer interface {
	eris.BlockGetter
	eris.BlockPutter
	// Close ends the peer's connections and waits for their goroutines.
	Close() error
	// URL is the peer's URL with defaults filled in (port, store path).
	URL() string
}

// ClientOptions configure a Peer. The zero value is ready to use.
type ClientOptions struct {
	// Logger receives connection events; nil discards.
	Logger *slog.Logger
	// Conns is the number of sockets (CoAP over UDP) or connections (TCP
	// and Unix) a peer spreads requests over (default 2).
	// One goroutine reads each (go-coap's over TCP, ours over UDP), so
	// several keep both ends busy on more than one core.
	Conns int
	// MaxInFlight bounds the requests in flight to the peer (default 1,024
	// for CoAP over UDP, 256 over TCP and Unix sockets, 64 for HTTP, which
	// needs a connection for each); more wait. A tree of small files is
	// many small blocks: over a link of 20 ms round trips, 64 in flight
	// held a lazy read of a whole tree to about 3,200 blocks a second.
	// Over UDP it also caps the congestion window, which bounds the
	// datagrams in flight (a 32 KiB block is 32 requests): it starts at
	// 32, grows with every answer and halves on a retransmission.
	MaxInFlight int
	// BlockWindow is how many parts of one block-wise transfer may be
	// asked for at once (default 32). A 32 KiB block over UDP is 32 parts
	// of 1 KiB: asking for all at once makes it one round trip instead
	// of 32, within the congestion window over UDP; over TCP (BERT from
	// other servers) the peer uses fewer when many blocks are in flight,
	// keeping about MaxInFlight requests out in all. 1 asks in turn.
	BlockWindow int
	// DialTimeout bounds connecting over TCP or a Unix socket (default 5s).
	DialTimeout time.Duration
	// AckTimeout and MaxRetransmit set CoAP-over-UDP retransmission
	// (RFC 7252 §4.8; defaults 2s and 4). Zero means the default.
	AckTimeout    time.Duration
	MaxRetransmit int
	// HTTPClient is used for http(s) peers; nil means a client with its own
	// transport keeping MaxInFlight connections to the host.
	HTTPClient *http.Client
}

func (o *ClientOptions) fill(t transport) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Conns <= 0 {
		o.Conns = 2
	}
	if o.MaxInFlight <= 0 {
		// A CoAP peer takes many requests on one socket or connection;
		// over HTTP each request in flight is a connection of its own.
		switch t {
		case transportHTTP:
			o.MaxInFlight = 64
		case transportUDP:
			// Over UDP a 32 KiB block is 32 exchanges, and MaxInFlight
			// also caps the congestion window of the parts in flight:
			// 1,024 parts of 1 KiB keep a 20 ms, 100 Mbit/s link busy.
			o.MaxInFlight = 1024
		default:
			o.MaxInFlight = 256
		}
	}
	if o.BlockWindow <= 0 {
		o.BlockWindow = 32
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 2 * time.Second
	}
	if o.MaxRetransmit <= 0 {
		o.MaxRetransmit = 4
	}
}

// Dial returns a Peer for a store URL:
//
//	coap://host[:5683][/store-path]       CoAP over UDP (block-wise for 32 KiB)
//	coap+tcp://host[:5683][/store-path]   CoAP over TCP
//	coap+unix:///path/to.sock             CoAP (RFC 8323 framing) over a Unix socket
//	http[s]://host[:port][/prefix]        ERIS over HTTP (RFC 2169 N2R)
//	http[s]://host[:port][/prefix]?layout=static   a file per block: <prefix>/<REF>
//
// The CoAP store path defaults to /.well-known/eris. Dial only checks the
// URL: connections are made by the first request and made again after
// they break, so a peer that is down now is reported by GetBlock (and
// skipped by a Pool), not by Dial. ctx is not retained.
func Dial(ctx context.Context, rawURL string, opts ClientOptions) (Peer, error) {
	ep, err := parseEndpoint(rawURL)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts.fill(ep.transport)
	if ep.transport == transportHTTP {
		return newHTTPPeer(ep, opts), nil
	}
	if ep.transport == transportUDP {
		return newUDPPeer(ep, opts), nil
	}
	return newCoAPPeer(ep, opts), nil
}
