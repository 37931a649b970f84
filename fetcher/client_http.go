package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"erismount/eris"
)

// httpPeer is an ERIS-over-HTTP store: GET <prefix>/uri-res/N2R?urn:blake2b:<REF>
// (RFC 2169) and PUT of a block to the same URL; in the static layout
// (?layout=static) the block's URL is <prefix>/<REF> instead, a plain file
// any web server serves (publish --blocks-dir writes them). Blocks are
// verified against their reference either way.
type httpPeer struct {
	url    string
	base   string // scheme://host:port/prefix/uri-res/N2R?urn:blake2b: or scheme://host:port/prefix/
	client *http.Client
	own    *http.Transport // closed by Close when we made it
	sem    inFlight
}

func newHTTPPeer(ep endpoint, opts ClientOptions) *httpPeer {
	p := &httpPeer{
		url:  ep.String(),
		base: ep.scheme + "://" + ep.addr + ep.path + n2rPath + "?" + urnPrefix,
		sem:  make(inFlight, opts.MaxInFlight),
	}
	if ep.static {
		p.base = ep.scheme + "://" + ep.addr + ep.path + "/"
	}
	if opts.HTTPClient != nil {
		p.client = opts.HTTPClient
	} else {
		p.own = http.DefaultTransport.(*http.Transport).Clone()
		p.own.MaxIdleConnsPerHost = opts.MaxInFlight
		p.own.ResponseHeaderTimeout = 30 * time.Second
		p.client = &http.Client{Transport: p.own}
	}
	return p
}

func (p *httpPeer) URL() string { return p.url }

// GetBlock fetches and verifies one block.
func (p *httpPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return getVerified(ctx, p.url, ref, p.get)
}

func (p *httpPeer) get(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if err := p.sem.acquire(ctx, nil); err != nil {
		return nil, err
	}
	defer p.sem.release()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+ref.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, eris.ErrNotFound
	default:
		return nil, httpStatusErr(resp)
	}
	return readBlock(resp.Body, resp.ContentLength)
}

// readBlock reads a response body that must be at most one block: n bytes
// when the length is known (n >= 0), else up to 32 KiB.
func readBlock(r io.Reader, n int64) ([]byte, error) {
	if n > eris.BlockSize32K {
		return nil, fmt.Errorf("%w: response of %d bytes", eris.ErrCorrupt, n)
	}
	size := n
	if n < 0 {
		size = eris.BlockSize32K
	}
	b := make([]byte, size)
	got, err := io.ReadFull(r, b)
	switch {
	case err == nil:
		// Full: anything more makes it longer than a block.
		var one [1]byte
		if k, _ := io.ReadFull(r, one[:]); k > 0 {
			return nil, fmt.Errorf("%w: response of more than %d bytes", eris.ErrCorrupt, size)
		}
	case n < 0 && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)):
	default:
		return nil, err // cut short: a transport failure
	}
	return b[:got], nil
}

// PutBlock stores a block with PUT <prefix>/uri-res/N2R?urn:blake2b:<REF>;
// the server answers 201 Created (or 200/204) once it has checked and
// stored it.
func (p *httpPeer) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	return putNamed(p.url, ref, p.put(ctx, ref, block))
}

func (p *httpPeer) put(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := p.sem.acquire(ctx, nil); err != nil {
		return err
	}
	defer p.sem.release()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.base+ref.String(), bytes.NewReader(block))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusOK, http.StatusNoContent:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil
	default:
		return httpStatusErr(resp)
	}
}

func httpStatusErr(resp *http.Response) error {
	diag, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return &StatusError{Code: resp.Status, Diagnostic: strings.TrimSpace(string(bytes.ToValidUTF8(diag, nil)))}
}

// Close closes idle connections of a transport the peer made itself.
func (p *httpPeer) Close() error {
	if p.own != nil {
		p.own.CloseIdleConnections()
	}
	return nil
}
