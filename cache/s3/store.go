package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"gopkg.in/ini.v1"

	"erismount/eris"
)

var (
	// ErrAccessDenied means the service refused the credentials or their
	// rights (403: a wrong key or secret, a bad signature, no permission
	// on the bucket). Asking again will not help.
	ErrAccessDenied = errors.New("s3: access denied")
	// ErrNoBucket means the bucket does not exist.
	ErrNoBucket = errors.New("s3: no such bucket")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("s3: store closed")
)

// Credentials are an explicit key pair, for programs that have their own
// source of keys. The CLI never uses them: it takes the environment's.
type Credentials struct {
	AccessKey, SecretKey, SessionToken string
}

// Options configure Open. The zero value reads the environment.
type Options struct {
	// Logger receives request failures at debug level; nil discards.
	Logger *slog.Logger
	// Credentials, when set, are used instead of the environment's
	// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, then
	// the shared credentials and config files of AWS_PROFILE). With none
	// anywhere, requests are anonymous (a public bucket).
	Credentials *Credentials
	// Getenv reads the environment (endpoint, region, files); nil means
	// os.Getenv.
	Getenv func(string) string
	// MaxInFlight bounds the requests in flight from this store (default
	// 256), and the connections it keeps open to the service.
	MaxInFlight int
	// GetRetries is how many times a failed GET or HEAD is sent again by
	// the client (default 1; negative for none): a pool of peers retries
	// and fails over on its own. Uploads are retried up to 5 times.
	GetRetries int
	// Transport carries the requests; nil means one of the store's own.
	// Requests are counted on top of it (Stats).
	Transport http.RoundTripper
}

// Store is an ERIS block store in an S3-compatible bucket: one object per
// block, named PREFIX/REF (Location.Key), written once and never changed.
// Every block is verified on the way in (PutBlock checks size and hash
// before sending) and on the way out (GetBlock checks what the service
// returned), so a tampered or truncated object is an eris.ErrCorrupt, never
// data. It implements eris.BlockStore and the methods of a fetcher.Peer
// (URL, Close), and is safe for concurrent use.
type Store struct {
	loc    Location
	url    string // loc with the endpoint and region in use: printable
	get    *minio.Core
	put    *minio.Core
	log    *slog.Logger
	sem    chan struct{}
	counts *counters
	own    *http.Transport // closed by Close when we made it
	known  knownSet

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
}

var _ eris.BlockStore = (*Store)(nil)

// Open returns a store for the s3:// URL raw (see ParseURL). It makes no
// request: Check asks the service whether the bucket can be reached.
func Open(raw string, opts Options) (*Store, error) {
	loc, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return OpenLocation(loc, opts)
}

// OpenLocation is Open for a parsed location.
func OpenLocation(loc Location, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 256
	}
	switch {
	case opts.GetRetries == 0:
		opts.GetRetries = 1
	case opts.GetRetries < 0:
		opts.GetRetries = 0
	}
	prof := readProfile(getenv)
	var err error
	if loc.Endpoint == "" {
		ep := firstOf(getenv("AWS_ENDPOINT_URL_S3"), getenv("AWS_ENDPOINT_URL"), prof.endpoint)
		if ep == "" {
			ep = "https://s3.amazonaws.com"
		}
		if loc.Endpoint, err = parseEndpoint(ep); err != nil {
			return nil, fmt.Errorf("%w: endpoint from the environment: %v", ErrBadURL, err)
		}
	}
	if loc.Region == "" {
		// Always set: without it the client asks the bucket's location
		// first, a request more for every bucket.
		loc.Region = firstOf(getenv("AWS_REGION"), getenv("AWS_DEFAULT_REGION"), prof.region, "us-east-1")
	}
	ep, _ := url.Parse(loc.Endpoint)
	secure := ep.Scheme == "https"

	s := &Store{loc: loc, url: loc.String(), log: opts.Logger, sem: make(chan struct{}, opts.MaxInFlight), counts: &counters{}}
	base := opts.Transport
	if base == nil {
		t, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, err
		}
		t.MaxIdleConnsPerHost = opts.MaxInFlight
		t.MaxIdleConns = opts.MaxInFlight
		t.ResponseHeaderTimeout = 30 * time.Second
		s.own, base = t, t
	}
	creds := credentialsFrom(opts.Credentials, getenv)
	lookup := minio.BucketLookupAuto
	switch loc.Lookup {
	case LookupPath:
		lookup = minio.BucketLookupPath
	case LookupVirtual:
		lookup = minio.BucketLookupDNS
	}
	newCore := func(retries int) (*minio.Core, error) {
		return minio.NewCore(ep.Host, &minio.Options{
			Creds:        creds,
			Secure:       secure,
			Transport:    &countingTransport{base: base, c: s.counts},
			Region:       loc.Region,
			BucketLookup: lookup,
			MaxRetries:   retries + 1, // minio-go counts the first request
		})
	}
	if s.get, err = newCore(opts.GetRetries); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if s.put, err = newCore(5); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// credentialsFrom is the explicit pair, or the AWS environment variables,
// then the shared credentials and config files (the AWS SDK's order,
// without the instance metadata service: it would send requests to a
// link-local address on any machine without keys).
func credentialsFrom(c *Credentials, getenv func(string) string) *credentials.Credentials {
	if c != nil {
		return credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.SessionToken)
	}
	if id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		return credentials.NewStaticV4(id, secret, getenv("AWS_SESSION_TOKEN"))
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.FileAWSCredentials{Profile: getenv("AWS_PROFILE")},
		// Nothing found: anonymous requests, for a public bucket.
		&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}},
	})
}

// profile is what the AWS config file says of the current profile.
type profile struct{ region, endpoint string }

// readProfile reads region and endpoint_url of AWS_PROFILE (or
// "default") from AWS_CONFIG_FILE or ~/.aws/config; a missing or
// unreadable file says nothing.
func readProfile(getenv func(string) string) profile {
	path := getenv("AWS_CONFIG_FILE")
	if path == "" {
		home := getenv("HOME")
		if home == "" {
			return profile{}
		}
		path = filepath.Join(home, ".aws", "config")
	}
	f, err := ini.Load(path)
	if err != nil {
		return profile{}
	}
	name := firstOf(getenv("AWS_PROFILE"), "default")
	sec, err := f.GetSection("profile " + name)
	if err != nil {
		if sec, err = f.GetSection(name); err != nil {
			return profile{}
		}
	}
	return profile{region: sec.Key("region").String(), endpoint: sec.Key("endpoint_url").String()}
}

// URL is the store's s3:// URL, with the endpoint and region in use; it
// never holds credentials.
func (s *Store) URL() string { return s.url }

// Location is where the blocks are.
func (s *Store) Location() Location { return s.loc }

func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrClosed
	}
}

func (s *Store) release() { <-s.sem }

// bufs are read buffers of one block and a byte: a longer object is
// corrupt.
var bufs = sync.Pool{New: func() any { b := make([]byte, eris.BlockSize32K+1); return &b }}

// GetBlock returns the verified block ref: eris.ErrNotFound when the
// bucket has no such object, eris.ErrCorrupt when the object is not the
// block (tampered, truncated, of another size), ErrAccessDenied when the
// credentials are refused. Errors name the store and the block.
func (s *Store) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	s.counts.getCalls.Add(1)
	b, err := s.getBlock(ctx, ref)
	if err != nil {
		switch {
		case errors.Is(err, eris.ErrNotFound):
			s.counts.notFound.Add(1)
			return nil, &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w at %s", eris.ErrNotFound, s.url)}
		case errors.Is(err, eris.ErrCorrupt):
			s.counts.corrupt.Add(1)
			s.log.Warn("corrupt object in the bucket", "store", s.url, "key", s.loc.Key(ref), "err", err)
		default:
			s.counts.errors.Add(1)
		}
		return nil, fmt.Errorf("get block %s from %s: %w", ref.Str(), s.url, err)
	}
	s.counts.blocks.Add(1)
	s.counts.bytes.Add(int64(len(b)))
	return b, nil
}

func (s *Store) getBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	body, info, _, err := s.get.GetObject(ctx, s.loc.Bucket, s.loc.Key(ref), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.classify(ctx, err)
	}
	defer body.Close()
	if info.Size > eris.BlockSize32K {
		return nil, fmt.Errorf("%w: object of %d bytes, an ERIS block is at most %d", eris.ErrCorrupt, info.Size, eris.BlockSize32K)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	n, err := io.ReadFull(body, *bp)
	switch {
	case err == nil:
		return nil, fmt.Errorf("%w: object longer than %d bytes", eris.ErrCorrupt, eris.BlockSize32K)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	default:
		return nil, s.classify(ctx, err) // cut short: a transport failure
	}
	if info.Size >= 0 && int64(n) != info.Size {
		return nil, fmt.Errorf("object cut short: %d of %d bytes", n, info.Size)
	}
	b := bytes.Clone((*bp)[:n])
	if err := ref.Verify(b); err != nil {
		return nil, err
	}
	return b, nil
}

// classify turns a client error into one callers branch on.
func (s *Store) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	r := minio.ToErrorResponse(err)
	switch {
	case r.StatusCode == http.StatusForbidden || slices.Contains(accessCodes, r.Code):
		return fmt.Errorf("%w by %s: %s (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile (AWS_PROFILE), "+
			"and the key's rights on the bucket (s3:GetObject, s3:ListBucket; s3:PutObject to publish)",
			ErrAccessDenied, s.loc.Endpoint, r.Code, strings.TrimSuffix(r.Message, "."))
	case r.Code == "NoSuchBucket":
		return fmt.Errorf("%w: %s at %s", ErrNoBucket, s.loc.Bucket, s.loc.Endpoint)
	case r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound && (r.Code == "" || r.Code == "NotFound"):
		// A HEAD answer has no body: minio-go calls its 404 NoSuchKey.
		return eris.ErrNotFound
	case r.StatusCode != 0:
		return fmt.Errorf("%s answered %d %s: %s", s.loc.Endpoint, r.StatusCode, r.Code, r.Message)
	}
	return err
}

// accessCodes are the S3 error codes of refused credentials or rights
// (XAdminUserNotFound: versitygw's answer to an unknown key, with a 404).
var accessCodes = []string{"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
	"ExpiredToken", "TokenRefreshRequired", "AllAccessDisabled", "XAdminUserNotFound"}

// Check asks the service whether the bucket exists and the credentials
// are good, with one listing of at most one key under the prefix (a GET:
// unlike HEAD, its error answers carry a code to tell a wrong key from a
// missing bucket): ErrNoBucket, ErrAccessDenied, or the transport error
// (service down) otherwise.
func (s *Store) Check(ctx context.Context) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prefix := s.loc.Prefix
	if prefix != "" {
		prefix += "/"
	}
	for obj := range s.get.Client.ListObjects(lctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, MaxKeys: 1}) {
		if obj.Err != nil {
			return fmt.Errorf("%s: %w", s.url, s.classify(ctx, obj.Err))
		}
		break // one page is enough
	}
	return nil
}

// PutBlock stores block under ref unless the bucket has it already (see
// PutMode). It refuses a block that is not 1 KiB or 32 KiB, or that does
// not hash to ref (eris.ErrCorrupt), before sending anything. The object
// is complete when PutBlock returns nil.
func (s *Store) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	s.counts.putCalls.Add(1)
	if err := verifyPut(ref, block); err != nil {
		s.counts.rejected.Add(1)
		return fmt.Errorf("put block %s to %s: %w", ref.Str(), s.url, err)
	}
	if s.known.has(ref) {
		s.counts.present.Add(1)
		return nil
	}
	sent, err := s.putBlock(ctx, ref, block)
	if err != nil {
		s.counts.errors.Add(1)
		return fmt.Errorf("put block %s to %s: %w", ref.Str(), s.url, err)
	}
	s.known.add(ref)
	if sent {
		s.counts.uploaded.Add(1)
		s.counts.uploadedBytes.Add(int64(len(block)))
	} else {
		s.counts.present.Add(1)
	}
	return nil
}

// verifyPut checks a block before it is sent.
func verifyPut(ref eris.Ref, block []byte) error {
	if !eris.ValidBlockSize(len(block)) {
		return fmt.Errorf("%w: block of %d bytes, want 1024 or 32768", eris.ErrCorrupt, len(block))
	}
	return ref.Verify(block)
}

// putBlock sends the block if the bucket lacks it, and says whether it did.
func (s *Store) putBlock(ctx context.Context, ref eris.Ref, block []byte) (sent bool, err error) {
	if err := s.acquire(ctx); err != nil {
		return false, err
	}
	defer s.release()
	key := s.loc.Key(ref)
	opts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		// The object never changes: a CDN or browser in front of a
		// public bucket may keep it for good.
		CacheControl: "public, max-age=31536000, immutable",
	}
	if s.loc.Put == PutHead {
		info, err := s.put.StatObject(ctx, s.loc.Bucket, key, minio.StatObjectOptions{})
		if err != nil {
			err = s.classify(ctx, err)
		}
		switch {
		case err == nil && info.Size == int64(len(block)):
			return false, nil
		case err == nil:
			// A truncated or foreign object under the name: replace it
			// (the block's own bytes are the only right content).
			s.log.Warn("object of the wrong size in the bucket, sending the block again", "store", s.url, "key", key, "size", info.Size)
		case !errors.Is(err, eris.ErrNotFound):
			return false, err
		}
	} else {
		opts.SetMatchETagExcept("*")
	}
	// The payload's SHA-256 signs the request in one piece (without it
	// minio-go signs an aws-chunked stream, more work at both ends), and
	// Content-MD5 has the service check the body it received.
	sum := sha256.Sum256(block)
	md := md5.Sum(block)
	_, err = s.put.PutObject(ctx, s.loc.Bucket, key, bytes.NewReader(block), int64(len(block)),
		base64.StdEncoding.EncodeToString(md[:]), hex.EncodeToString(sum[:]), opts)
	if err != nil {
		r := minio.ToErrorResponse(err)
		if s.loc.Put == PutConditional && (r.StatusCode == http.StatusPreconditionFailed || r.StatusCode == http.StatusConflict) {
			// 412: there already. 409: another upload of the same name
			// is under way, and a block's name fixes its bytes.
			return false, nil
		}
		return false, s.classify(ctx, err)
	}
	return true, nil
}

// Close ends requests in flight and closes idle connections of a
// transport the store made itself.
func (s *Store) Close() error {
	s.cancel()
	if s.own != nil {
		s.own.CloseIdleConnections()
	}
	return nil
}

// knownSet remembers blocks this process knows the bucket holds, so that
// a block put again (a file published twice, a block shared by trees) costs
// no request. It is bounded: when full it starts again.
type knownSet struct {
	mu sync.Mutex
	m  map[eris.Ref]struct{}
}

const maxKnown = 1 << 20 // about 64 MiB at most

func (k *knownSet) has(ref eris.Ref) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.m[ref]
	return ok
}

func (k *knownSet) add(ref eris.Ref) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= maxKnown {
		k.m = make(map[eris.Ref]struct{})
	}
	k.m[ref] = struct{}{}
}
