package fetcher

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultStorePath is the path of the endpoint-wide ERIS store on a CoAP
// endpoint (specs/eris-transports.md, "ERIS over CoAP"): blocks are the
// resource <store path>/blocks.
const DefaultStorePath = "/.well-known/eris"

// defaultCoAPPort is the IANA port of coap and coap+tcp (RFC 7252, RFC 8323).
const defaultCoAPPort = "5683"

// layoutStatic is the query of an HTTP peer URL in the static layout: each
// block is the file <prefix>/<REF in base32>, as `erismount publish
// --blocks-dir` writes them, so any web server, CDN or bucket serves them.
const layoutStatic = "layout=static"

// n2rPath is the RFC 2169 URN-to-resource path used by ERIS over HTTP.
const n2rPath = "/uri-res/N2R"

// Transport names an endpoint's network protocol.
type transport int

const (
	transportUDP  transport = iota // coap://
	transportTCP                   // coap+tcp://
	transportUnix                  // coap+unix:// (RFC 8323 framing on a Unix socket)
	transportHTTP                  // http:// and https://
)

func (t transport) String() string {
	switch t {
	case transportUDP:
		return "coap"
	case transportTCP:
		return "coap+tcp"
	case transportUnix:
		return "coap+unix"
	default:
		return "http"
	}
}

// endpoint is a parsed peer or listen URL.
type endpoint struct {
	transport transport
	scheme    string // as given: coap, coap+tcp, coap+unix, http, https
	addr      string // host:port, or the socket path for coap+unix
	// path is the store path for CoAP (DefaultStorePath when the URL has
	// none) and the prefix before /uri-res/N2R for HTTP ("" for none).
	path string
	// static: an HTTP peer in the static layout (?layout=static), a
	// plain file tree with each block at <prefix>/<REF>.
	static bool
}

// blocksPath is the CoAP resource that serves blocks.
func (e endpoint) blocksPath() string { return e.path + "/blocks" }

// String gives the endpoint back as a URL, with defaults filled in.
func (e endpoint) String() string {
	switch e.transport {
	case transportUnix:
		return e.scheme + "://" + e.addr
	case transportHTTP:
		if e.static {
			return e.scheme + "://" + e.addr + e.path + "?" + layoutStatic
		}
		return e.scheme + "://" + e.addr + e.path
	default:
		return e.scheme + "://" + e.addr + e.path
	}
}

// parseEndpoint parses a peer or listen URL:
//
//	coap://host[:port][/store-path]       CoAP over UDP (RFC 7252)
//	coap+tcp://host[:port][/store-path]   CoAP over TCP (RFC 8323)
//	coap+unix:///path/to.sock             RFC 8323 framing on a Unix socket
//	http[s]://host[:port][/prefix]        RFC 2169 N2R resolution
//	http[s]://host[:port][/prefix]?layout=static   a file per block, <prefix>/<REF>
//
// The coap+unix scheme is our own (no standard exists): its path is the
// socket, and the store is always DefaultStorePath.
func parseEndpoint(raw string) (endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("%w %q: %v", ErrBadURL, raw, err)
	}
	bad := func(format string, args ...any) (endpoint, error) {
		return endpoint{}, fmt.Errorf("%w %q: %s", ErrBadURL, raw, fmt.Sprintf(format, args...))
	}
	if u.User != nil || u.Fragment != "" {
		return bad("user info and fragment are not allowed")
	}
	e := endpoint{scheme: strings.ToLower(u.Scheme)}
	switch {
	case u.RawQuery == "":
	case (e.scheme == "http" || e.scheme == "https") && u.RawQuery == layoutStatic:
		e.static = true
	case e.scheme == "http" || e.scheme == "https":
		return bad("the only query is ?%s (blocks as files <prefix>/<REF>)", layoutStatic)
	default:
		return bad("a query is allowed only on http(s) URLs (?%s)", layoutStatic)
	}
	switch e.scheme {
	case "coap", "coap+udp":
		e.transport, e.scheme = transportUDP, "coap"
	case "coap+tcp":
		e.transport = transportTCP
	case "coap+unix":
		e.transport = transportUnix
		if u.Host != "" {
			return bad("coap+unix takes a socket path and no host: coap+unix:///path/to.sock")
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return bad("coap+unix needs an absolute socket path")
		}
		e.addr, e.path = u.Path, DefaultStorePath
		return e, nil
	case "http", "https":
		e.transport = transportHTTP
	default:
		return bad("unknown scheme %q (want coap, coap+tcp, coap+unix, http or https)", u.Scheme)
	}
	host := u.Hostname()
	switch {
	case host == "":
		return bad("missing host")
	case strings.HasPrefix(u.Host, "["):
		if ip, _, _ := strings.Cut(host, "%"); net.ParseIP(ip) == nil {
			return bad("%q is not an IPv6 address", host)
		}
	case strings.Contains(host, ":"):
		return bad("an IPv6 address goes in brackets, as in coap://[::1]:5683")
	}
	port := u.Port()
	if n, err := strconv.Atoi(port); port != "" && (err != nil || n > 65535) {
		return bad("port %q out of range", port)
	}
	switch {
	case port != "":
	case e.transport == transportHTTP && e.scheme == "https":
		port = "443"
	case e.transport == transportHTTP:
		port = "80"
	default:
		port = defaultCoAPPort
	}
	e.addr = net.JoinHostPort(host, port)
	e.path = strings.TrimRight(u.Path, "/")
	if e.transport != transportHTTP && e.path == "" {
		e.path = DefaultStorePath
	}
	return e, nil
}
