package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"erismount/cache/cachetest"
	"erismount/cache/s3"
	"erismount/eris"
	"erismount/tests/testenv"
)

// bucketSeq names a fresh bucket for each store a test opens.
var bucketSeq atomic.Int64

func newBucket(t testing.TB, srv *testenv.S3Server) string {
	t.Helper()
	b := fmt.Sprintf("erismount-%d-%d", os.Getpid(), bucketSeq.Add(1))
	srv.MakeBucket(t, b)
	return b
}

// open opens a store over a new bucket of srv with the server's keys.
func open(t testing.TB, srv *testenv.S3Server, query string) *s3.Store {
	t.Helper()
	return openQuery(t, srv, query, s3.Options{})
}

// openWith is open with options.
func openWith(t testing.TB, srv *testenv.S3Server, opts s3.Options) *s3.Store {
	t.Helper()
	return openQuery(t, srv, "", opts)
}

func openQuery(t testing.TB, srv *testenv.S3Server, query string, opts s3.Options) *s3.Store {
	t.Helper()
	u := srv.URL(newBucket(t, srv), "blocks/v1")
	if query != "" {
		u += "&" + query
	}
	opts.Credentials = &s3.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	opts.Logger = testenv.Logger(t)
	st, err := s3.Open(u, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestConformance runs the block store contract against a real S3 server,
// for both ways of making a put idempotent and for the write-behind
// uploader.
func TestConformance(t *testing.T) {
	srv := testenv.StartS3(t)
	opts := cachetest.Options{VerifiesPuts: true, Timeout: 30 * time.Second, Blocks: 100}
	for _, query := range []string{"", "put=conditional"} {
		t.Run("Store/"+query, func(t *testing.T) {
			cachetest.Run(t, func(t *testing.T) eris.BlockStore { return open(t, srv, query) }, opts)
		})
	}
	t.Run("Uploader", func(t *testing.T) {
		cachetest.Run(t, func(t *testing.T) eris.BlockStore {
			u := open(t, srv, "").NewUploader(16)
			t.Cleanup(func() {
				if err := u.Close(); err != nil {
					t.Errorf("Uploader.Close: %v", err)
				}
			})
			return u
		}, opts)
	})
}

// TestKeysAreTheStaticLayout checks the object name of a block: the
// prefix, a slash, and the 52-character base32 reference, the name a
// plain HTTP server of the bucket's files serves it under.
func TestKeysAreTheStaticLayout(t *testing.T) {
	srv := testenv.StartS3(t)
	st := open(t, srv, "")
	ref, b := cachetest.Block(1, eris.BlockSize1K)
	if err := st.PutBlock(ctxT(t), ref, b); err != nil {
		t.Fatal(err)
	}
	key := "blocks/v1/" + ref.String()
	if got := st.Location().Key(ref); got != key || len(ref.String()) != 52 {
		t.Fatalf("Key = %q, want %q (52 characters of base32)", got, key)
	}
	got, err := os.ReadFile(srv.ObjectFile(st.Location().Bucket, key))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("object file %s: %d bytes, %v; want the block", key, len(got), err)
	}
}

// TestRequestCounts pins down what each operation costs in requests: the
// figures the README's cost section is built from.
func TestRequestCounts(t *testing.T) {
	srv := testenv.StartS3(t)
	const n = 20
	refs := make([]eris.Ref, n)
	blocks := make([][]byte, n)
	for i := range refs {
		refs[i], blocks[i] = cachetest.Block(uint64(100+i), eris.BlockSize1K)
	}
	putAll := func(st interface {
		PutBlock(context.Context, eris.Ref, []byte) error
	}) {
		t.Helper()
		for i := range refs {
			if err := st.PutBlock(ctxT(t), refs[i], blocks[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := func(st *s3.Store, what string, gets, puts, heads int64) {
		t.Helper()
		s := st.Stats()
		if s.GETs != gets || s.PUTs != puts || s.HEADs != heads || s.Other != 0 {
			t.Errorf("%s: %d GET, %d PUT, %d HEAD, %d other requests; want %d, %d, %d, 0", what, s.GETs, s.PUTs, s.HEADs, s.Other, gets, puts, heads)
		}
	}

	t.Run("head", func(t *testing.T) {
		st := open(t, srv, "")
		putAll(st)
		want(st, "new blocks", 0, n, n)
		putAll(st)
		want(st, "the same blocks again, same process", 0, n, n)
		// Another process over the same bucket knows nothing: one HEAD
		// each, nothing sent.
		again, err := s3.OpenLocation(st.Location(), s3.Options{Credentials: &s3.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}})
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		putAll(again)
		want(again, "blocks already in the bucket", 0, 0, n)
		if s := again.Stats(); s.Present != n || s.Uploaded != 0 {
			t.Errorf("present %d, uploaded %d; want %d, 0", s.Present, s.Uploaded, n)
		}
		for i := range refs {
			if _, err := again.GetBlock(ctxT(t), refs[i]); err != nil {
				t.Fatal(err)
			}
		}
		want(again, "and read back", n, 0, n)
		missing, _ := cachetest.Block(99, eris.BlockSize1K)
		if _, err := again.GetBlock(ctxT(t), missing); !errors.Is(err, eris.ErrNotFound) {
			t.Fatalf("missing block: %v", err)
		}
		want(again, "and one missing", n+1, 0, n)
	})
	t.Run("conditional", func(t *testing.T) {
		st := open(t, srv, "put=conditional")
		putAll(st)
		want(st, "new blocks", 0, n, 0)
		again, err := s3.OpenLocation(st.Location(), s3.Options{Credentials: &s3.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}})
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		putAll(again)
		want(again, "blocks already in the bucket (sent, refused with 412)", 0, n, 0)
		if s := again.Stats(); s.Present != n || s.Uploaded != 0 {
			t.Errorf("present %d, uploaded %d; want %d, 0", s.Present, s.Uploaded, n)
		}
	})
}

// TestTamperedObject: an object changed in the bucket behind the store's
// back (other bytes, cut short, grown) is reported corrupt, never returned.
func TestTamperedObject(t *testing.T) {
	srv := testenv.StartS3(t)
	st := open(t, srv, "")
	ref, b := cachetest.Block(7, eris.BlockSize32K)
	if err := st.PutBlock(ctxT(t), ref, b); err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	key := st.Location().Key(ref)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"one bit flipped", append([]byte{b[0] ^ 1}, b[1:]...)},
		{"cut short", b[:1000]},
		{"empty", nil},
		{"grown", append(bytes.Clone(b), 0)},
		{"another block", func() []byte { _, o := cachetest.Block(8, eris.BlockSize32K); return o }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.PutObject(ctxT(t), st.Location().Bucket, key, bytes.NewReader(tc.body), int64(len(tc.body)), minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			got, err := st.GetBlock(ctxT(t), ref)
			if !errors.Is(err, eris.ErrCorrupt) || got != nil {
				t.Fatalf("GetBlock of a tampered object: %d bytes, %v; want no bytes and eris.ErrCorrupt", len(got), err)
			}
			if !strings.Contains(err.Error(), ref.Str()) || !strings.Contains(err.Error(), "s3://") {
				t.Errorf("error %q does not name the block and the store", err)
			}
		})
	}
	if n := st.Stats().Corrupt; n != 5 {
		t.Errorf("Stats().Corrupt = %d, want 5", n)
	}
	// A put of the right block through a store that does not know it is
	// there replaces an object of the wrong size.
	again, err := s3.OpenLocation(st.Location(), s3.Options{Credentials: &s3.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := c.PutObject(ctxT(t), st.Location().Bucket, key, bytes.NewReader(b[:10]), 10, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := again.PutBlock(ctxT(t), ref, b); err != nil {
		t.Fatal(err)
	}
	if got, err := again.GetBlock(ctxT(t), ref); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("after the repairing put: %d bytes, %v", len(got), err)
	}
}

// TestWrongCredentials: a wrong secret or key gives ErrAccessDenied with a
// message that says what to check, and never the secret.
func TestWrongCredentials(t *testing.T) {
	srv := testenv.StartS3(t)
	bucket := newBucket(t, srv)
	ref, b := cachetest.Block(1, eris.BlockSize1K)
	for _, tc := range []struct {
		name string
		c    s3.Credentials
	}{
		{"wrong secret", s3.Credentials{AccessKey: srv.AccessKey, SecretKey: "not-the-secret-42"}},
		{"unknown key", s3.Credentials{AccessKey: "nobody", SecretKey: "not-the-secret-42"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := s3.Open(srv.URL(bucket, "p"), s3.Options{Credentials: &tc.c})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for what, err := range map[string]error{
				"Check":    st.Check(ctxT(t)),
				"PutBlock": st.PutBlock(ctxT(t), ref, b),
				"GetBlock": func() error { _, err := st.GetBlock(ctxT(t), ref); return err }(),
			} {
				if !errors.Is(err, s3.ErrAccessDenied) {
					t.Errorf("%s: %v; want s3.ErrAccessDenied", what, err)
					continue
				}
				if strings.Contains(err.Error(), "not-the-secret-42") {
					t.Errorf("%s: the error shows the secret: %v", what, err)
				}
				if !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") {
					t.Errorf("%s: %v; want it to say what to check", what, err)
				}
			}
		})
	}
}

// TestNoBucket: Check says the bucket is missing.
func TestNoBucket(t *testing.T) {
	srv := testenv.StartS3(t)
	st, err := s3.Open(srv.URL("no-such-bucket-here", ""), s3.Options{Credentials: &s3.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(ctxT(t)); !errors.Is(err, s3.ErrNoBucket) || !strings.Contains(err.Error(), "no-such-bucket-here") {
		t.Fatalf("Check: %v; want s3.ErrNoBucket naming the bucket", err)
	}
}

// TestServiceDown: with the service stopped, a get fails (neither not
// found nor corrupt) by the caller's deadline; once it is back, the same
// store reads again.
func TestServiceDown(t *testing.T) {
	srv := testenv.StartS3(t)
	st := open(t, srv, "")
	ref, b := cachetest.Block(3, eris.BlockSize1K)
	if err := st.PutBlock(ctxT(t), ref, b); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := st.GetBlock(ctx, ref)
	if err == nil || errors.Is(err, eris.ErrNotFound) || errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("GetBlock with the service down: %v; want a transport error", err)
	}
	if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetBlock returned after the deadline without saying so: %v", err)
	}
	srv.Start(t)
	if got, err := st.GetBlock(ctxT(t), ref); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("GetBlock once the service is back: %d bytes, %v", len(got), err)
	}
}

// TestUploaderReportsFailure: uploads that fail (service down) are
// reported by Flush, and PutBlock stops taking blocks after a failure.
func TestUploaderReportsFailure(t *testing.T) {
	srv := testenv.StartS3(t)
	st := open(t, srv, "")
	u := st.NewUploader(4)
	defer u.Close()
	srv.Stop()
	var putErr error
	for i := range 50 {
		ref, b := cachetest.Block(uint64(i), eris.BlockSize1K)
		if putErr = u.PutBlock(ctxT(t), ref, b); putErr != nil {
			break
		}
	}
	ferr := u.Flush(ctxT(t))
	if ferr == nil && putErr == nil {
		t.Fatal("uploads to a stopped service: PutBlock and Flush both succeeded")
	}
	srv.Start(t)
	ref, b := cachetest.Block(1000, eris.BlockSize1K)
	if err := u.PutBlock(ctxT(t), ref, b); err != nil {
		t.Fatalf("PutBlock after the failure was reported and the service is back: %v", err)
	}
	if err := u.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetBlock(ctxT(t), ref); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("block uploaded after recovery: %d bytes, %v", len(got), err)
	}
}

// TestEnvironment: endpoint, region and keys come from the standard AWS
// variables and files when the URL does not say.
func TestEnvironment(t *testing.T) {
	srv := testenv.StartS3(t)
	bucket := newBucket(t, srv)
	ref, b := cachetest.Block(5, eris.BlockSize1K)
	t.Run("variables", func(t *testing.T) {
		env := map[string]string{
			"AWS_ENDPOINT_URL":      srv.Endpoint,
			"AWS_REGION":            "us-east-1",
			"AWS_ACCESS_KEY_ID":     srv.AccessKey,
			"AWS_SECRET_ACCESS_KEY": srv.SecretKey,
		}
		st, err := s3.Open("s3://"+bucket+"/env?path-style=true", s3.Options{Getenv: func(k string) string { return env[k] }})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.PutBlock(ctxT(t), ref, b); err != nil {
			t.Fatal(err)
		}
		if loc, err := s3.ParseURL(st.URL()); err != nil || loc.Endpoint != srv.Endpoint || loc.Region != "us-east-1" {
			t.Errorf("URL %q does not show the endpoint and region in use (%v)", st.URL(), err)
		}
	})
	t.Run("files", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "config")
		creds := filepath.Join(dir, "credentials")
		os.WriteFile(cfg, []byte("[profile erismount]\nregion = us-east-1\nendpoint_url = "+srv.Endpoint+"\n"), 0o600)
		os.WriteFile(creds, []byte("[erismount]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = "+srv.SecretKey+"\n"), 0o600)
		for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"} {
			t.Setenv(k, "")
		}
		t.Setenv("AWS_CONFIG_FILE", cfg)
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
		t.Setenv("AWS_PROFILE", "erismount")
		st, err := s3.Open("s3://"+bucket+"/env?path-style=true", s3.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if got, err := st.GetBlock(ctxT(t), ref); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("GetBlock with keys from the shared files: %d bytes, %v", len(got), err)
		}
		if strings.Contains(st.URL(), srv.SecretKey) {
			t.Errorf("URL %q holds the secret", st.URL())
		}
	})
}

// TestPublicBucket: a bucket whose objects anyone may read serves its
// blocks to a plain HTTP GET of ENDPOINT/BUCKET/PREFIX/REF (the static
// layout: no erismount process, no signature), and to a store with no
// credentials at all, which sends anonymous requests.
func TestPublicBucket(t *testing.T) {
	srv := testenv.StartS3(t)
	st := open(t, srv, "")
	bucket := st.Location().Bucket
	ref, b := cachetest.Block(11, eris.BlockSize1K)
	if err := st.PutBlock(ctxT(t), ref, b); err != nil {
		t.Fatal(err)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::` + bucket + `/*"]}]}`
	if err := srv.Client(t).SetBucketPolicy(ctxT(t), bucket, policy); err != nil {
		t.Fatalf("make the bucket public: %v", err)
	}

	resp, err := http.Get(srv.Endpoint + "/" + bucket + "/" + st.Location().Key(ref))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, b) || ref.Verify(got) != nil {
		t.Fatalf("plain GET of the object: %s, %d bytes", resp.Status, len(got))
	}

	anon, err := s3.OpenLocation(st.Location(), s3.Options{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if got, err := anon.GetBlock(ctxT(t), ref); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("anonymous GetBlock: %d bytes, %v", len(got), err)
	}
	if err := anon.PutBlock(ctxT(t), eris.RefOf(make([]byte, 1024)), make([]byte, 1024)); !errors.Is(err, s3.ErrAccessDenied) {
		t.Errorf("anonymous PutBlock: %v, want s3.ErrAccessDenied", err)
	}
}
