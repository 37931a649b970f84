package s3

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"

	"erismount/eris"
)

// ErrBadURL means an s3:// URL could not be used; the error says what was
// wrong with it.
var ErrBadURL = errors.New("s3: bad URL")

// Lookup is how the bucket is named in requests.
type Lookup int

const (
	// LookupAuto: virtual-hosted style for Amazon's endpoints, path style
	// for any other (minio-go's rule).
	LookupAuto Lookup = iota
	// LookupPath: http://endpoint/BUCKET/KEY (MinIO, Garage, SeaweedFS,
	// versitygw, Ceph RGW without wildcard DNS).
	LookupPath
	// LookupVirtual: http://BUCKET.endpoint/KEY.
	LookupVirtual
)

// PutMode is how an upload avoids sending a block the bucket holds.
type PutMode int

const (
	// PutHead asks HEAD first and sends the block only when it is missing
	// (or has the wrong size): two requests for a new block, one for a
	// block already there. Every S3 implementation supports it.
	PutHead PutMode = iota
	// PutConditional sends the block with If-None-Match: * (RFC 9110
	// §13.1.2; Amazon S3 since 2024, MinIO, versitygw): one request
	// either way, but a block already there is sent over the wire again.
	PutConditional
)

// Location is a parsed s3:// URL: a bucket, a key prefix, and what was
// said of the endpoint. It never holds credentials.
type Location struct {
	Bucket string
	// Prefix is prepended to every key, without a trailing slash ("" for
	// none): a block is the object Prefix + "/" + its reference.
	Prefix string
	// Endpoint is scheme://host[:port] of the S3 service, or "" for the
	// environment's (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL) or Amazon's.
	Endpoint string
	// Region is the bucket's region, or "" for the environment's.
	Region string
	Lookup Lookup
	Put    PutMode
}

// queryKeys are the parameters an s3:// URL may carry.
var queryKeys = []string{"endpoint", "region", "path-style", "put"}

// ParseURL parses
//
//	s3://BUCKET[/PREFIX][?endpoint=http://HOST:PORT][&region=R][&path-style=true|false][&put=head|conditional]
//
// Credentials are refused in the URL: URLs are printed and logged, so
// keys come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN) or the shared credentials file (AWS_PROFILE).
func ParseURL(raw string) (Location, error) {
	bad := func(format string, args ...any) (Location, error) {
		if strings.Contains(raw, "@") {
			// It may hold user info (of the endpoint, too): not quoted.
			return Location{}, fmt.Errorf("%w: %s", ErrBadURL, fmt.Sprintf(format, args...))
		}
		return Location{}, fmt.Errorf("%w %q: %s", ErrBadURL, raw, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return Location{}, fmt.Errorf("%w: not a URL (and credentials do not go in one)", ErrBadURL)
		}
		return bad("%v", errors.Unwrap(err))
	}
	if u.User != nil {
		// Do not quote raw: it holds a secret.
		return Location{}, fmt.Errorf("%w s3://%s/…: credentials do not go in the URL (it is printed and logged); "+
			"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE for the shared credentials file", ErrBadURL, u.Host)
	}
	if !strings.EqualFold(u.Scheme, "s3") {
		return bad("want an s3://BUCKET/PREFIX URL")
	}
	if u.Opaque != "" {
		return bad("want s3://BUCKET/PREFIX, with two slashes")
	}
	if u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return bad("a fragment is not allowed")
	}
	loc := Location{Bucket: u.Host}
	if loc.Bucket == "" {
		return bad("missing bucket")
	}
	if err := s3utils.CheckValidBucketName(loc.Bucket); err != nil {
		return bad("bucket %q: %v", loc.Bucket, err)
	}
	if loc.Prefix, err = cleanPrefix(u.Path); err != nil {
		return bad("%v", err)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	for k, vs := range q {
		if !slices.Contains(queryKeys, k) {
			return bad("unknown parameter %q (want %s)", k, strings.Join(queryKeys, ", "))
		}
		if len(vs) != 1 {
			return bad("parameter %q given %d times", k, len(vs))
		}
	}
	if v := q.Get("endpoint"); q.Has("endpoint") {
		if loc.Endpoint, err = parseEndpoint(v); err != nil {
			return bad("endpoint: %v", err)
		}
	}
	if v := q.Get("region"); q.Has("region") {
		if !validRegion(v) {
			return bad("region %q: want letters, digits and hyphens, such as us-east-1", v)
		}
		loc.Region = v
	}
	switch v := q.Get("path-style"); v {
	case "":
		if q.Has("path-style") {
			return bad("path-style wants true or false")
		}
	case "true", "1":
		loc.Lookup = LookupPath
	case "false", "0":
		loc.Lookup = LookupVirtual
	default:
		return bad("path-style %q: want true or false", v)
	}
	switch v := q.Get("put"); v {
	case "", "head":
		if v == "" && q.Has("put") {
			return bad("put wants head or conditional")
		}
	case "conditional":
		loc.Put = PutConditional
	default:
		return bad("put %q: want head or conditional", v)
	}
	return loc, nil
}

// cleanPrefix checks a URL path as a key prefix: no empty, "." or ".."
// segments and no control characters, so that a key is also a plain HTTP
// path (the static layout another server reads the bucket by).
func cleanPrefix(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return "", nil
	}
	if len(p) > 512 {
		return "", fmt.Errorf("prefix of %d bytes: at most 512 (S3 keys are at most 1024)", len(p))
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return "", fmt.Errorf("prefix %q has an empty segment", p)
		case ".", "..":
			return "", fmt.Errorf("prefix %q has a %q segment", p, seg)
		}
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' || r == '?' || r == '#' {
			return "", fmt.Errorf("prefix %q has the character %q", p, r)
		}
	}
	return p, nil
}

// parseEndpoint checks an endpoint URL: http or https, a host, an optional
// port, nothing else.
func parseEndpoint(v string) (string, error) {
	e, err := url.Parse(v)
	if err != nil {
		if strings.Contains(v, "@") {
			return "", errors.New("not a URL")
		}
		return "", err
	}
	if e.User != nil {
		return "", errors.New("credentials do not go in the endpoint URL")
	}
	scheme := strings.ToLower(e.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("%q: want http://HOST[:PORT] or https://HOST[:PORT]", v)
	}
	if e.Host == "" || e.Hostname() == "" {
		return "", fmt.Errorf("%q: missing host", v)
	}
	if (e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.Fragment != "" || e.Opaque != "" {
		return "", fmt.Errorf("%q: only scheme, host and port", v)
	}
	if h := e.Hostname(); strings.Contains(h, ":") && net.ParseIP(h) == nil {
		return "", fmt.Errorf("%q: bad IPv6 address", v)
	}
	if port := e.Port(); port != "" {
		if n, ok := atoiPort(port); !ok || n == 0 {
			return "", fmt.Errorf("%q: port %q out of range", v, port)
		}
	} else if strings.HasSuffix(e.Host, ":") {
		return "", fmt.Errorf("%q: empty port", v)
	}
	return scheme + "://" + strings.ToLower(e.Host), nil
}

func atoiPort(s string) (int, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = 10*n + int(c-'0')
	}
	return n, n <= 65535
}

func validRegion(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Key is the object name of a block: PREFIX/REF, with REF the
// 52-character base32 reference (the static HTTP block layout's name).
func (l Location) Key(ref eris.Ref) string {
	if l.Prefix == "" {
		return ref.String()
	}
	return l.Prefix + "/" + ref.String()
}

// String gives the location back as an s3:// URL with what was set:
// never a credential.
func (l Location) String() string {
	var b strings.Builder
	b.WriteString("s3://")
	b.WriteString(l.Bucket)
	if l.Prefix != "" {
		b.WriteString("/")
		b.WriteString((&url.URL{Path: l.Prefix}).EscapedPath())
	}
	q := url.Values{}
	if l.Endpoint != "" {
		q.Set("endpoint", l.Endpoint)
	}
	if l.Region != "" {
		q.Set("region", l.Region)
	}
	switch l.Lookup {
	case LookupPath:
		q.Set("path-style", "true")
	case LookupVirtual:
		q.Set("path-style", "false")
	}
	if l.Put == PutConditional {
		q.Set("put", "conditional")
	}
	if len(q) > 0 {
		b.WriteString("?")
		b.WriteString(q.Encode())
	}
	return b.String()
}

// IsURL reports whether raw is meant as an s3:// URL (the scheme alone
// decides, so that a malformed one is reported by ParseURL, not taken for
// a file name).
func IsURL(raw string) bool {
	return len(raw) >= 5 && strings.EqualFold(raw[:5], "s3://")
}
