package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"

	"erismount/eris"
)

// coapConn is what the peer needs of a go-coap connection
// (tcp/client.Conn).
type coapConn interface {
	NewGetRequest(ctx context.Context, path string, opts ...message.Option) (*pool.Message, error)
	NewPutRequest(ctx context.Context, path string, contentFormat message.MediaType, payload io.ReadSeeker, opts ...message.Option) (*pool.Message, error)
	Do(req *pool.Message) (*pool.Message, error)
	ReleaseMessage(m *pool.Message)
	Close() error
	Context() context.Context
	Done() <-chan struct{}
}

// coapPeer is a CoAP block store over TCP or a Unix socket (RFC 8323),
// on go-coap's client connections; CoAP over UDP is udpPeer.
//
// Block-wise transfer (RFC 7959, BERT) is done here, not by go-coap: when
// the answer to a GET comes in parts (Block2), the other parts are asked
// for, several at once when few blocks are in flight, and each is checked
// (number, size, fit with the announced Size2, 32 KiB at most in all).
// go-coap's own block-wise layer buffers a representation of any size a
// peer sends; ours stops at one ERIS block.
type coapPeer struct {
	url  string
	ep   endpoint
	opts ClientOptions
	log  *slog.Logger

	sem   inFlight
	slots []coapSlot
	next  atomic.Uint32
	tick  *periodic

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	once   stopOnce

	// The last network failure go-coap reported (a reset connection, say)
	// and when: the requests it
	// ends only see "connection was closed". failed is closed, and
	// replaced, each time one is recorded.
	failMu  sync.Mutex
	failAt  time.Time
	failErr error
	failed  chan struct{}
}

type coapSlot struct {
	mu sync.Mutex
	cc coapConn
}

func newCoAPPeer(ep endpoint, opts ClientOptions) *coapPeer {
	ctx, cancel := context.WithCancel(context.Background())
	// go-coap retransmits confirmable messages from its periodic runner,
	// so the tick bounds how late a retransmission is.
	tick := min(max(opts.AckTimeout/4, 5*time.Millisecond), 250*time.Millisecond)
	return &coapPeer{
		url:    ep.String(),
		ep:     ep,
		opts:   opts,
		log:    opts.Logger,
		sem:    make(inFlight, opts.MaxInFlight),
		slots:  make([]coapSlot, opts.Conns),
		tick:   newPeriodic(tick),
		ctx:    ctx,
		cancel: cancel,
		failed: make(chan struct{}),
	}
}

func (p *coapPeer) URL() string { return p.url }

// conn returns a live connection, dialling one if its slot is empty or
// its connection ended (peer closed it, socket error).
func (p *coapPeer) conn(ctx context.Context) (coapConn, error) {
	s := &p.slots[int(p.next.Add(1))%len(p.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if s.cc != nil && s.cc.Context().Err() == nil {
		return s.cc, nil
	}
	if s.cc != nil {
		_ = s.cc.Close()
		s.cc = nil
	}
	cc, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.cc = cc
	return cc, nil
}

func (p *coapPeer) coapErrors(err error) {
	p.log.Debug("coap client", "peer", p.url, "err", err)
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, errno) {
			p.failMu.Lock()
			p.failAt, p.failErr = time.Now(), err
			close(p.failed)
			p.failed = make(chan struct{})
			p.failMu.Unlock()
			return
		}
	}
}

// failedSince returns a channel closed when go-coap next reports a network
// failure, and the failure it reported at or after t, if any.
func (p *coapPeer) failedSince(t time.Time) (<-chan struct{}, error) {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	if p.failErr == nil || p.failAt.Before(t) {
		return p.failed, nil
	}
	return p.failed, p.failErr
}

// connError is a request ended by a network failure of its connection:
// it reads as the failure's errno (the socket's local port, which differs
// on every connection, left out), and matches both errors.
type connError struct{ cause, err error }

func (e *connError) Error() string {
	var errno syscall.Errno
	if errors.As(e.cause, &errno) {
		return errno.Error()
	}
	return e.cause.Error()
}

func (e *connError) Unwrap() []error { return []error{e.cause, e.err} }

func (p *coapPeer) dial(ctx context.Context) (coapConn, error) {
	common := []tcp.Option{
		options.WithErrors(p.coapErrors),
		options.WithPeriodicRunner(p.tick.add),
		// go-coap serializes requests unless told otherwise (both limits
		// default to 1); MaxInFlight bounds them instead.
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
		options.WithBlockwise(false, blockwise.SZX1024, 10*time.Second),
		options.WithReceivedMessageQueueSize(64),
		options.WithCloseSocket(),
	}
	network := "tcp"
	if p.ep.transport == transportUnix {
		network = "unix"
	}
	d := net.Dialer{Timeout: p.opts.DialTimeout}
	c, err := d.DialContext(ctx, network, p.ep.addr)
	if err != nil {
		return nil, err
	}
	cc, err := tcp.Client(c, append(common, options.WithMaxMessageSize(64<<10))...)
	if err != nil {
		c.Close()
		return nil, err
	}
	return cc, nil
}

func (p *coapPeer) refOption(ref eris.Ref) message.Option {
	return message.Option{ID: message.URIQuery, Value: []byte(ref.String())}
}

// GetBlock fetches and verifies one block.
func (p *coapPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return getVerified(ctx, p.url, ref, p.get)
}

// get is fetch, its error explained by the network failure that ended the
// connection, if one did.
func (p *coapPeer) get(ctx context.Context, ref eris.Ref) ([]byte, error) {
	start := time.Now()
	b, err := p.fetch(ctx, ref)
	if err == nil || ctx.Err() != nil {
		return b, err
	}
	next, cause := p.failedSince(start)
	if cause == nil && errors.Is(err, context.Canceled) {
		// A request its connection's end cancelled may return before
		// go-coap has reported why: give the report a moment.
		t := time.NewTimer(128 * time.Millisecond)
		select {
		case <-next:
			_, cause = p.failedSince(start)
		case <-t.C:
		}
		t.Stop()
	}
	if cause != nil && !errors.Is(err, cause) {
		err = &connError{cause: cause, err: err}
	}
	return b, err
}

func (p *coapPeer) fetch(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if err := p.sem.acquire(ctx, p.ctx.Done()); err != nil {
		return nil, err
	}
	defer p.sem.release()
	cc, err := p.conn(ctx)
	if err != nil {
		return nil, err
	}
	t := &transfer{p: p, cc: cc, q: p.refOption(ref)}
	if t.token, err = message.GetToken(); err != nil {
		return nil, err
	}
	// The first response says whether the block comes in parts, of which
	// size, and (Size2) how long it is.
	first, err := t.ask(ctx, t.token, -1)
	if err != nil {
		return nil, err
	}
	defer cc.ReleaseMessage(first)
	opt, err := first.GetOptionUint32(message.Block2)
	if err != nil { // the whole block at once
		n, err := first.BodySize()
		if err != nil {
			return nil, err
		}
		if n > eris.BlockSize32K {
			return nil, fmt.Errorf("%w: response of %d bytes", eris.ErrCorrupt, n)
		}
		return first.ReadBody()
	}
	if t.szx, _, _, err = blockwise.DecodeBlockOption(opt); err != nil {
		return nil, err
	}
	t.bs = blockSize(t.szx)
	total := int64(-1) // unknown without Size2: the parts are fetched in turn
	if s2, err := first.GetOptionUint32(message.Size2); err == nil {
		if s2 > eris.BlockSize32K {
			return nil, fmt.Errorf("%w: peer announces %d bytes", eris.ErrCorrupt, s2)
		}
		total = int64(s2)
	}
	t.body = make([]byte, 0, eris.BlockSize32K) // parts never go beyond (take)
	if total >= 0 {
		t.body = t.body[:0:total]
	}
	more, err := t.take(first, 0, total)
	if err != nil || !more {
		return t.body, err
	}
	// Keep about MaxInFlight requests out: when many blocks are in flight
	// already, their parts in turn are enough (and cheapest); when few
	// are, each asks for several parts at once.
	window := min(p.opts.BlockWindow, p.opts.MaxInFlight/max(len(p.sem), 1))
	if total < 0 || window <= 1 {
		return t.body, t.sequential(ctx, total)
	}
	return t.body, t.parallel(ctx, total, window)
}

// transfer is one block-wise GET (RFC 7959 §2.4): Block2 parts of bs bytes.
type transfer struct {
	p     *coapPeer
	cc    coapConn
	q     message.Option
	token message.Token
	szx   blockwise.SZX
	bs    int64
	body  []byte
}

// ask sends one GET for part num (num < 0: the first request, without
// Block2) and returns a 2.05 response; other codes are errors.
func (t *transfer) ask(ctx context.Context, token message.Token, num int64) (*pool.Message, error) {
	cc := t.cc
	resp, err := t.p.exchange(cc, func() (*pool.Message, error) {
		req, err := cc.NewGetRequest(ctx, t.p.ep.blocksPath(), t.q)
		if err != nil {
			return nil, err
		}
		req.SetToken(token)
		if num >= 0 {
			opt, err := blockwise.EncodeBlockOption(t.szx, num, false)
			if err != nil {
				cc.ReleaseMessage(req)
				return nil, err
			}
			req.SetOptionUint32(message.Block2, opt)
		}
		return req, nil
	})
	if err != nil {
		return nil, t.p.transportErr(ctx, cc, err)
	}
	switch resp.Code() {
	case codes.Content:
		return resp, nil
	case codes.NotFound:
		err = eris.ErrNotFound
	default:
		err = statusErr(resp)
	}
	cc.ReleaseMessage(resp)
	return nil, err
}

// take checks the response for part num and copies its payload into the
// body at num*bs. total is the announced length (-1 if unknown).
func (t *transfer) take(resp *pool.Message, num, total int64) (more bool, err error) {
	opt, err := resp.GetOptionUint32(message.Block2)
	if err != nil {
		return false, errors.New("peer stopped block-wise transfer")
	}
	payload, err := resp.ReadBody()
	if err != nil {
		return false, err
	}
	t.body, more, err = placeBlock2(t.body, t.szx, t.bs, num, total, opt, payload)
	return more, err
}

// sequential asks for the parts one after another until the last, with
// the first request's token, so that a server keeping the representation
// by token (go-coap does) serves it without building it again.
func (t *transfer) sequential(ctx context.Context, total int64) error {
	for {
		num := int64(len(t.body)) / t.bs
		resp, err := t.ask(ctx, t.token, num)
		if err != nil {
			return err
		}
		more, err := t.take(resp, num, total)
		t.cc.ReleaseMessage(resp)
		if err != nil || !more {
			return err
		}
	}
}

// parallel asks for the remaining parts of a transfer of known length,
// window at a time (RFC 7959 §2.4 lets a client ask for any block): over
// a link with latency a 32 KiB block takes a few round trips instead of 32.
func (t *transfer) parallel(ctx context.Context, total int64, window int) error {
	count := (total + t.bs - 1) / t.bs
	t.body = t.body[:total]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	next.Store(1)
	for range min(int64(window), count-1) {
		wg.Go(func() {
			token, err := message.GetToken()
			for err == nil {
				num := next.Add(1) - 1
				if num >= count {
					return
				}
				var resp *pool.Message
				if resp, err = t.ask(ctx, token, num); err == nil {
					_, err = t.take(resp, num, total)
					t.cc.ReleaseMessage(resp)
				}
			}
			errOnce.Do(func() { firstErr = err; cancel() })
		})
	}
	wg.Wait()
	return firstErr
}

// blockSize is the size of a block of a block-wise transfer; BERT (szx 7,
// RFC 8323 §6) counts in 1 KiB units.
func blockSize(szx blockwise.SZX) int64 {
	if szx >= blockwise.SZXBERT {
		return 1024
	}
	return 16 << szx
}

func szxOf(size int64) blockwise.SZX {
	for szx := blockwise.SZX16; szx < blockwise.SZXBERT; szx++ {
		if 16<<szx == size {
			return szx
		}
	}
	return blockwise.SZX1024
}

// PutBlock stores a block with PUT <store>/blocks?<REF>, in one message.
func (p *coapPeer) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	return putNamed(p.url, ref, p.put(ctx, ref, block))
}

func (p *coapPeer) put(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := p.sem.acquire(ctx, p.ctx.Done()); err != nil {
		return err
	}
	defer p.sem.release()
	cc, err := p.conn(ctx)
	if err != nil {
		return err
	}
	resp, err := p.exchange(cc, func() (*pool.Message, error) {
		return cc.NewPutRequest(ctx, p.ep.blocksPath(), message.AppOctets, bytes.NewReader(block), p.refOption(ref))
	})
	if err != nil {
		return p.transportErr(ctx, cc, err)
	}
	defer cc.ReleaseMessage(resp)
	if code := resp.Code(); code != codes.Created && code != codes.Changed {
		return statusErr(resp)
	}
	return nil
}

// exchange sends the request build makes and returns the response.
func (p *coapPeer) exchange(cc coapConn, build func() (*pool.Message, error)) (*pool.Message, error) {
	req, err := build()
	if err != nil {
		return nil, err
	}
	resp, err := cc.Do(req)
	cc.ReleaseMessage(req)
	return resp, err
}

// transportErr prefers the caller's context error (deadline, cancel) over
// go-coap's wording of it. A stream connection that failed a write is
// closed, so that the next request dials a new one instead of failing on
// it too (go-coap notices a broken connection only when a read fails).
func (p *coapPeer) transportErr(ctx context.Context, cc coapConn, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if p.ctx.Err() != nil {
		return ErrClosed
	}
	if brokenConn(err) {
		_ = cc.Close()
	}
	return err
}

func brokenConn(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// statusErr describes an unexpected CoAP response.
func statusErr(resp *pool.Message) error {
	diag, _ := resp.ReadBody()
	return statusErrOf(resp.Code(), diag)
}

// coapCodeString writes a code as RFC 7252 does: "4.04 NotFound".
func coapCodeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d %v", c>>5, c&31, c)
}

// Close closes the peer's connections and waits for their goroutines.
func (p *coapPeer) Close() error {
	p.once.do(func() {
		p.cancel()
		var done []<-chan struct{}
		for i := range p.slots {
			s := &p.slots[i]
			s.mu.Lock()
			if s.cc != nil {
				_ = s.cc.Close()
				done = append(done, s.cc.Done())
				s.cc = nil
			}
			s.mu.Unlock()
		}
		for _, d := range done {
			select {
			case <-d:
			case <-time.After(5 * time.Second):
				p.log.Warn("coap connection did not end", "peer", p.url)
			}
		}
		p.tick.stop()
	})
	return nil
}
