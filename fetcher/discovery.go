package fetcher

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Discovery of block stores on the local link (RFC 7252 §8, RFC 6690 §4).
//
// A discoverable CoAP-over-UDP listener (ServerOptions.Discoverable, bound
// to a wildcard address) joins the "All CoAP Nodes" groups on every
// multicast interface and answers GET /.well-known/core, filtered by rt,
// with a link to its store: </.well-known/eris>;rt="eris.blocks". Discover
// asks the groups and returns the stores that answered as peer URLs.
// Nothing is advertised unless a node listens and asks to be found.

// ResourceType is the resource type (rt) of an ERIS block store in a
// link-format answer.
const ResourceType = "eris.blocks"

// nodeAttr is the link attribute that carries a node's id (NodeID) in its
// discovery answer.
const nodeAttr = "node"

// The "All CoAP Nodes" groups and the CoAP port (RFC 7252 §12.8, §6.1).
var (
	allCoAPNodesIPv4 = net.IPv4(224, 0, 1, 187)
	allCoAPNodesIPv6 = net.ParseIP("ff02::fd")
)

const coapPort = 5683

// formatLinks writes links in link format, every value quoted.
func formatLinks(links []Link) string {
	var b strings.Builder
	for i, l := range links {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("<" + l.Target + ">")
		for _, a := range l.Attrs {
			b.WriteString(";" + a.Name)
			if a.Value != "" {
				b.WriteString(`="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a.Value) + `"`)
			}
		}
	}
	return b.String()
}

// coreLinks answers GET /.well-known/core with the query qs: the link to
// the store, or nothing when a filter does not match it (RFC 6690 §4.1).
func (c *coapBlocks) coreLinks(qs []string) (string, bool) {
	link := Link{Target: c.storePath, Attrs: []LinkAttr{{"rt", ResourceType}}}
	if !c.s.opts.Node.IsZero() {
		link.Attrs = append(link.Attrs, LinkAttr{nodeAttr, c.s.opts.Node.String()})
	}
	for _, q := range qs {
		name, value, _ := strings.Cut(q, "=")
		switch {
		case name == "rt" && strings.HasSuffix(value, "*"):
			if !strings.HasPrefix(ResourceType, strings.TrimSuffix(value, "*")) {
				return "", false
			}
		case name == "rt":
			if value != ResourceType {
				return "", false
			}
		case name == nodeAttr:
			if c.s.opts.Node.IsZero() || value != c.s.opts.Node.String() {
				return "", false
			}
		case name == "href":
			if value != c.storePath && !(strings.HasSuffix(value, "*") && strings.HasPrefix(c.storePath, strings.TrimSuffix(value, "*"))) {
				return "", false
			}
		default:
			return "", false // a filter on an attribute we do not have
		}
	}
	return formatLinks([]Link{link}), true
}

// isCoreRequest reports whether req is GET /.well-known/core.
func isCoreRequest(req *message.Message) bool {
	if req.Code != codes.GET {
		return false
	}
	p, err := req.Options.Path()
	return err == nil && p == "/.well-known/core"
}

// answerCore builds the answer to a GET /.well-known/core, or nil when
// there is nothing to say (a multicast request is never answered with an
// error, RFC 7252 §8.2).
func (c *coapBlocks) answerCore(req *message.Message, multicast bool) *message.Message {
	qs, _ := req.Options.Queries()
	links, ok := c.coreLinks(qs)
	if !ok && multicast {
		return nil
	}
	resp := &message.Message{Type: message.NonConfirmable, MessageID: int32(message.GetMID()), Token: req.Token, Code: codes.Content}
	if req.Type == message.Confirmable && !multicast {
		resp.Type, resp.MessageID = message.Acknowledgement, req.MessageID
	}
	if !ok {
		resp.Code = codes.NotFound
		return resp
	}
	resp.Options = message.Options{{ID: message.ContentFormat, Value: []byte{byte(message.AppLinkFormat)}}}
	resp.Payload = []byte(links)
	return resp
}

// joinAllCoAPNodes joins the All CoAP Nodes groups on every multicast
// interface that is up; it fails only if no group could be joined. raw is
// bound to a wildcard address: IPv4 only, or both families.
func joinAllCoAPNodes(raw *net.UDPConn, log *slog.Logger) error {
	ifis, err := net.Interfaces()
	if err != nil {
		return err
	}
	p4, p6 := ipv4.NewPacketConn(raw), ipv6.NewPacketConn(raw)
	joined := 0
	var errs []error
	for i := range ifis {
		ifi := &ifis[i]
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
			continue
		}
		if err := p4.JoinGroup(ifi, &net.UDPAddr{IP: allCoAPNodesIPv4}); err != nil {
			errs = append(errs, fmt.Errorf("%s on %s: %w", allCoAPNodesIPv4, ifi.Name, err))
		} else {
			joined++
		}
		if err := p6.JoinGroup(ifi, &net.UDPAddr{IP: allCoAPNodesIPv6}); err != nil {
			errs = append(errs, fmt.Errorf("%s on %s: %w", allCoAPNodesIPv6, ifi.Name, err))
		} else {
			joined++
		}
	}
	if joined == 0 {
		return fmt.Errorf("join the All CoAP Nodes groups: %w", errors.Join(append(errs, errors.New("no multicast interface is up"))...))
	}
	for _, err := range errs {
		log.Debug("discovery: group not joined", "err", err)
	}
	return nil
}

// DiscoverOptions configure Discover. The zero value asks the All CoAP
// Nodes groups on port 5683 and waits a second for answers.
type DiscoverOptions struct {
	// Wait is how long answers are collected (default 1s).
	Wait time.Duration
	// Port is the port the groups are asked on (default 5683).
	Port int
	// Self lists this node's own listen URLs: an answer from one of them
	// (the node hearing its own request) is left out.
	Self []string
	// Logger receives what could not be sent and the answers refused; nil
	// discards.
	Logger *slog.Logger
}

// ErrDiscovery is wrapped by the errors of Discover.
var ErrDiscovery = errors.New("fetcher: discovery")

// Discover asks the local link for ERIS block stores: a multicast GET
// /.well-known/core?rt=eris.blocks to the All CoAP Nodes groups (IPv4
// and IPv6, every multicast interface, hop limit 1). It returns the CoAP
// URLs of the stores that answered within opts.Wait, in the order they
// answered, each once. It errors only when the request could be sent on
// no interface.
func Discover(ctx context.Context, opts DiscoverOptions) ([]string, error) {
	found, err := DiscoverNodes(ctx, opts)
	urls := make([]string, 0, len(found))
	for _, f := range found {
		urls = append(urls, f.URL)
	}
	return urls, err
}

// Discovered is a store that answered discovery: its URL, and the node id
// it advertises (zero if none).
type Discovered struct {
	URL  string
	Node NodeID
}

// DiscoverNodes is Discover with the node id each store advertises.
//
// The request is sent twice, at once and halfway through opts.Wait, so
// that nodes started at the same moment (whose listeners were not up for
// the first) still find each other in one round.
func DiscoverNodes(ctx context.Context, opts DiscoverOptions) ([]Discovered, error) {
	if opts.Wait <= 0 {
		opts.Wait = time.Second
	}
	if opts.Port <= 0 {
		opts.Port = coapPort
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	self := make(map[netip.AddrPort]bool)
	local := localAddrs()
	for _, u := range opts.Self {
		ep, err := parseEndpoint(u)
		if err != nil || ep.transport != transportUDP {
			continue
		}
		if ap, err := netip.ParseAddrPort(ep.addr); err == nil {
			if ap.Addr().IsUnspecified() {
				for _, a := range local {
					self[netip.AddrPortFrom(a, ap.Port())] = true
				}
			}
			self[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
		}
	}
	token := make([]byte, 8)
	rand.Read(token)
	req := message.Message{Type: message.NonConfirmable, Code: codes.GET, MessageID: int32(message.GetMID()), Token: token}
	req.Options = message.Options{
		{ID: message.URIPath, Value: []byte(".well-known")},
		{ID: message.URIPath, Value: []byte("core")},
		{ID: message.URIQuery, Value: []byte("rt=" + ResourceType)},
	}
	buf := make([]byte, 256)
	n, err := coder.DefaultCoder.Encode(req, buf)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDiscovery, err)
	}
	dctx, cancel := context.WithTimeout(ctx, opts.Wait)
	defer cancel()

	type answer struct {
		from netip.AddrPort
		data []byte
	}
	answers := make(chan answer, 64)
	var conns []*net.UDPConn
	var sendErrs []error
	var sends []func() error
	for _, fam := range []struct {
		network string
		group   net.IP
	}{{"udp4", allCoAPNodesIPv4}, {"udp6", allCoAPNodesIPv6}} {
		raw, err := net.ListenUDP(fam.network, nil)
		if err != nil {
			sendErrs = append(sendErrs, err)
			continue
		}
		conn := coapnet.NewUDPConn(fam.network, raw)
		send := func() error {
			return conn.WriteMulticast(dctx, &net.UDPAddr{IP: fam.group, Port: opts.Port}, buf[:n],
				coapnet.WithAllMulticastInterface(),
				coapnet.WithMulticastInterfaceError(func(ifi *net.Interface, err error) {
					log.Debug("discovery: cannot ask", "interface", ifi.Name, "group", fam.group, "err", err)
				}))
		}
		sends = append(sends, send)
		if err := send(); err != nil {
			sendErrs = append(sendErrs, fmt.Errorf("%s: %w", fam.group, err))
		}
		conns = append(conns, raw)
		go func() {
			rb := make([]byte, 2048)
			for {
				n, from, err := raw.ReadFromUDPAddrPort(rb)
				if err != nil {
					return
				}
				select {
				case answers <- answer{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), data: append([]byte(nil), rb[:n]...)}:
				case <-dctx.Done():
					return
				}
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) == 0 {
		return nil, fmt.Errorf("%w: %v", ErrDiscovery, errors.Join(sendErrs...))
	}

	var found []Discovered
	seen := make(map[string]bool)
	again := time.NewTimer(opts.Wait / 2)
	defer again.Stop()
	for {
		select {
		case <-dctx.Done():
			return found, nil
		case <-again.C:
			for _, send := range sends {
				if err := send(); err != nil {
					log.Debug("discovery: cannot ask again", "err", err)
				}
			}
		case a := <-answers:
			d, err := discovered(a.from, a.data, token)
			if err != nil {
				log.Debug("discovery: answer refused", "from", a.from, "err", err)
				continue
			}
			if d.URL == "" || seen[d.URL] || self[a.from] {
				continue
			}
			seen[d.URL] = true
			found = append(found, d)
		}
	}
}

// discovered reads an answer to the discovery request: the URL of the
// first link to an ERIS block store and the node id it carries, or no URL
// if it names none. A malformed node id is left out (the store is still
// a store).
func discovered(from netip.AddrPort, data, token []byte) (Discovered, error) {
	u, l, err := discoveredLink(from, data, token)
	if err != nil || u == "" {
		return Discovered{}, err
	}
	d := Discovered{URL: u}
	for _, a := range l.Attrs {
		if a.Name == nodeAttr {
			d.Node, _ = ParseNodeID(a.Value)
			break
		}
	}
	return d, nil
}

// discoveredLink reads an answer to the discovery request: the URL of the
// first link to an ERIS block store, and the link, or "" if it names none.
func discoveredLink(from netip.AddrPort, data, token []byte) (string, Link, error) {
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(data, &m); err != nil {
		return "", Link{}, err
	}
	if string(m.Token) != string(token) {
		return "", Link{}, errors.New("not an answer to our request")
	}
	if m.Code != codes.Content {
		return "", Link{}, fmt.Errorf("answer %v", m.Code)
	}
	if cf, err := m.Options.ContentFormat(); err == nil && cf != message.AppLinkFormat {
		return "", Link{}, fmt.Errorf("content format %v, not link format", cf)
	}
	links, err := ParseLinkFormat(string(m.Payload))
	if err != nil {
		return "", Link{}, err
	}
	for _, l := range links {
		if !l.HasAttrValue("rt", ResourceType) || !strings.HasPrefix(l.Target, "/") || strings.HasPrefix(l.Target, "//") {
			continue // only paths on the answering node: never a third party
		}
		addr := from.Addr()
		if addr.Zone() != "" {
			continue // link-local IPv6: not expressible in our URLs
		}
		u := "coap://" + netip.AddrPortFrom(addr, from.Port()).String() + l.Target
		if _, err := parseEndpoint(u); err != nil {
			return "", Link{}, fmt.Errorf("link %q: %w", l.Target, err)
		}
		return u, l, nil
	}
	return "", Link{}, nil
}

// localAddrs are the addresses of this host's interfaces.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
