package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"erismount/narinfo"
)

// HTTPDoer sends HTTP requests; *http.Client is one.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// ErrWrongStore means an upstream serves another store directory than the
// one looked up (its /nix-cache-info says so); it is skipped, as Nix does.
var ErrWrongStore = errors.New("upstream serves another store directory")

// HTTP is a Lookup over an upstream substitute server (`guix publish`, a
// Nix binary cache over HTTP, another erismount): GET
// <base>/<hash part>.narinfo, as `guix substitute` and Nix ask. Before the
// first lookup it reads <base>/nix-cache-info, as Nix does, and skips the
// upstream (ErrWrongStore) if its StoreDir is another; a server without
// that file (404) is taken to serve the expected store, as Guix does.
// 404, 403 and 410 answers are ErrUnknown (403: how S3 answers for a
// missing object).
type HTTP struct {
	base   *url.URL // ends in "/"
	opts   Options
	client HTTPDoer

	mu   sync.Mutex
	info *CacheInfo // nil until read
}

// NewHTTP returns the Lookup of the substitute server at base, an http or
// https URL.
func NewHTTP(base string, opts Options) (*HTTP, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("source: upstream %q: want an http:// or https:// URL", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("source: upstream %q: no query or fragment", base)
	}
	client := opts.Client
	if client == nil {
		client = NewClient()
	}
	return &HTTP{base: dirURL(u), opts: opts, client: client}, nil
}

// NewClient returns the HTTP client HTTP uses by default: keep-alive
// connections to a few upstreams, headers within a minute; bodies (nars)
// as long as the caller's context allows.
func NewClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: t}
}

// String returns the upstream's URL.
func (h *HTTP) String() string { return strings.TrimSuffix(h.base.Redacted(), "/") }

// CacheInfo is /nix-cache-info.
type CacheInfo struct {
	StoreDir      string // "" when not stated
	WantMassQuery bool
	Priority      int // 0 when not stated
}

// ParseCacheInfo parses the text of /nix-cache-info: `Name: value` lines;
// unknown names are ignored, as by Nix.
func ParseCacheInfo(b []byte) (CacheInfo, error) {
	var ci CacheInfo
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return CacheInfo{}, fmt.Errorf("nix-cache-info: line %d: not `Name: value`", i+1)
		}
		value = strings.TrimSpace(value)
		switch name {
		case "StoreDir":
			if !strings.HasPrefix(value, "/") {
				return CacheInfo{}, fmt.Errorf("nix-cache-info: line %d: StoreDir %q is not absolute", i+1, trim(value))
			}
			ci.StoreDir = value
		case "WantMassQuery":
			ci.WantMassQuery = value == "1"
		case "Priority":
			p, err := strconv.Atoi(value)
			if err != nil {
				return CacheInfo{}, fmt.Errorf("nix-cache-info: line %d: Priority %q is not a number", i+1, trim(value))
			}
			ci.Priority = p
		}
	}
	return ci, nil
}

func trim(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// CacheInfo returns the upstream's /nix-cache-info, read once (again
// after a failure); a 404 is a CacheInfo without StoreDir.
func (h *HTTP) CacheInfo(ctx context.Context) (CacheInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.info != nil {
		return *h.info, nil
	}
	body, code, err := h.get(ctx, "nix-cache-info", 64<<10)
	if err != nil {
		return CacheInfo{}, err
	}
	var ci CacheInfo
	switch code {
	case http.StatusOK:
		if ci, err = ParseCacheInfo(body); err != nil {
			return CacheInfo{}, fmt.Errorf("source: %s: %w", h, err)
		}
	case http.StatusNotFound, http.StatusForbidden, http.StatusGone:
	default:
		return CacheInfo{}, fmt.Errorf("source: %s/nix-cache-info: HTTP %d", h, code)
	}
	h.info = &ci
	return ci, nil
}

// get fetches base+rel, at most limit bytes of body (more is an error).
func (h *HTTP) get(ctx context.Context, rel string, limit int64) ([]byte, int, error) {
	u := h.base.JoinPath(rel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("source: %w", err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("source: GET %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection
		return nil, resp.StatusCode, nil
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(resp.Body, limit+1)); err != nil {
		return nil, 0, fmt.Errorf("source: GET %s: %w", u.Redacted(), err)
	}
	if int64(buf.Len()) > limit {
		return nil, 0, fmt.Errorf("source: GET %s: larger than %d bytes", u.Redacted(), limit)
	}
	return buf.Bytes(), resp.StatusCode, nil
}

// Raw returns the upstream's narinfo of hashPart, unchecked, or an error
// matching ErrUnknown or ErrWrongStore.
func (h *HTTP) Raw(ctx context.Context, hashPart string) ([]byte, error) {
	if err := checkHashPart(hashPart, h.String()); err != nil {
		return nil, err
	}
	ci, err := h.CacheInfo(ctx)
	if err != nil {
		return nil, err
	}
	if ci.StoreDir != "" && ci.StoreDir != h.opts.StoreDir {
		return nil, fmt.Errorf("source: %s: %w: %s, not %s", h, ErrWrongStore, ci.StoreDir, h.opts.StoreDir)
	}
	body, code, err := h.get(ctx, hashPart+".narinfo", narinfo.MaxSize)
	switch {
	case err != nil:
		return nil, err
	case code == http.StatusOK:
		return body, nil
	case code == http.StatusNotFound || code == http.StatusForbidden || code == http.StatusGone:
		return nil, unknown(hashPart, h.String())
	}
	return nil, fmt.Errorf("source: %s/%s.narinfo: HTTP %d", h, hashPart, code)
}

// Narinfo fetches the upstream's narinfo of hashPart and checks it
// (Accept); its Locations resolve against the upstream's URL.
func (h *HTTP) Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error) {
	raw, err := h.Raw(ctx, hashPart)
	if err != nil {
		return nil, err
	}
	origin := h.String()
	n, err := Accept(raw, hashPart, h.opts.StoreDir, origin, h.opts.Trust)
	if err != nil {
		return nil, err
	}
	if err := resolve(n, h.base); err != nil {
		return nil, &UntrustedError{HashPart: hashPart, Origin: origin, Reason: err}
	}
	return n, nil
}
