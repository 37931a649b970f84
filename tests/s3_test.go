package tests

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"erismount/cache/s3"
	"erismount/eris"
	"erismount/tests/testenv"
)

// s3Fixture is a tree published with `erismount publish --store s3://…`
// into a bucket of a real S3 server.
type s3Fixture struct {
	srv    *testenv.S3Server
	bucket string
	url    string // s3://bucket/prefix?endpoint=…
	src    string
	urn    string
}

func publishS3(t *testing.T, srv *testenv.S3Server, bucket string, spec testenv.Spec) *s3Fixture {
	t.Helper()
	f := &s3Fixture{srv: srv, bucket: bucket, url: srv.URL(bucket, "eris/v1"), src: spec.WriteDir(t)}
	out, errOut, code := testenv.RunEnv(t, srv.Env(), "publish", "--store", f.url, f.src)
	if code != 0 {
		t.Fatalf("erismount publish --store %s: exit %d\n%s", f.url, code, errOut)
	}
	f.urn = strings.TrimSpace(out)
	if !strings.HasPrefix(f.urn, "urn:eris:") {
		t.Fatalf("publish printed %q", out)
	}
	return f
}

// serveS3 starts `erismount serve --store s3://…` with extra flags and
// returns the CoAP-over-TCP URL it serves.
func (f *s3Fixture) serveS3(t *testing.T, extra ...string) (*testenv.Process, string) {
	t.Helper()
	args := append([]string{"serve", "--store", f.url, "--listen", "coap+tcp://127.0.0.1:0"}, extra...)
	p := testenv.StartEnv(t, f.srv.Env(), args...)
	return p, testenv.FirstLine(t, p, time.Minute)
}

// blockOf returns the reference of a content block (a leaf) of the file at
// path in the published tree, read through a store of its own.
func (f *s3Fixture) blockOf(t *testing.T, path string) eris.Ref {
	t.Helper()
	st, err := s3.Open(f.url, s3.Options{Credentials: &s3.Credentials{AccessKey: f.srv.AccessKey, SecretKey: f.srv.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rc, err := eris.ParseURN(f.urn)
	if err != nil {
		t.Fatal(err)
	}
	tree := testenv.OpenTree(t, rc, st)
	var e = tree.Root()
	for _, name := range strings.Split(path, "/") {
		if e = e.Child(name); e == nil {
			t.Fatalf("no %s in the tree", path)
		}
	}
	var leaf eris.Ref
	err = eris.Walk(context.Background(), e.Capability(), st, func(ref eris.Ref, level int) error {
		if level == 0 && leaf.IsZero() {
			leaf = ref
		}
		return nil
	})
	if err != nil || leaf.IsZero() {
		t.Fatalf("walk the blocks of %s: %v", path, err)
	}
	return leaf
}

// TestS3PublishServeMount publishes a tree into a bucket, serves it from
// two stateless serve processes over that bucket (one with a SQLite tier
// in front, one with memory only), mounts it through both with an empty
// cache and compares every byte; each process alone also serves the whole
// tree, and a bucket read directly as a peer does too.
func TestS3PublishServeMount(t *testing.T) {
	testenv.RequireFUSE(t)
	srv := testenv.StartS3(t)
	srv.MakeBucket(t, "e2e-clean")
	f := publishS3(t, srv, "e2e-clean", testenv.Sample())
	n, size := srv.Objects(t, "e2e-clean", "eris/v1")
	t.Logf("published %s: %d objects, %d bytes in the bucket", f.urn[:24], n, size)
	if n == 0 {
		t.Fatal("no objects in the bucket after publish")
	}

	// Publishing again sends nothing: every block is there.
	if out, errOut, code := testenv.RunEnv(t, srv.Env(), "publish", "-v", "--store", f.url, f.src); code != 0 || strings.TrimSpace(out) != f.urn {
		t.Fatalf("second publish: exit %d, %q\n%s", code, out, errOut)
	} else if !strings.Contains(errOut, " PUT=0 ") || !strings.Contains(errOut, " uploaded=0 ") {
		t.Errorf("second publish sent blocks again:\n%s", errOut)
	}

	_, urlA := f.serveS3(t, "--cache-store", filepath.Join(t.TempDir(), "front.sqlite"))
	_, urlB := f.serveS3(t)

	dir := t.TempDir()
	m := testenv.Start(t, "mount", f.urn, dir, "--store", filepath.Join(t.TempDir(), "empty.sqlite"),
		"--peer", urlA, "--peer", urlB, "--tree-ahead", "0")
	testenv.WaitMounted(t, m, dir, time.Minute)
	testenv.CompareDirs(t, f.src, dir)
	m.Interrupt(t, dir)

	for name, peer := range map[string]string{"serve with a SQLite tier": urlA, "serve with memory only": urlB, "the bucket as a peer": f.url} {
		t.Run(name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			_, errOut, code := testenv.RunEnv(t, srv.Env(), "get", f.urn, dest, "--store", filepath.Join(t.TempDir(), "empty.sqlite"), "--peer", peer)
			if code != 0 {
				t.Fatalf("get --peer %s: exit %d\n%s", peer, code, errOut)
			}
			testenv.CompareDirs(t, f.src, dest)
		})
	}

	// pin with the bucket as its peer keeps the whole tree: get then
	// works offline from that store.
	store := filepath.Join(t.TempDir(), "pinned.sqlite")
	if _, errOut, code := testenv.RunEnv(t, srv.Env(), "pin", f.urn, "--store", store, "--peer", f.url); code != 0 {
		t.Fatalf("pin --peer %s: exit %d\n%s", f.url, code, errOut)
	}
	dest := filepath.Join(t.TempDir(), "offline")
	if _, errOut, code := testenv.Run(t, "get", f.urn, dest, "--store", store); code != 0 {
		t.Fatalf("get offline after pin: exit %d\n%s", code, errOut)
	}
	testenv.CompareDirs(t, f.src, dest)
}

// TestS3Tampered: an object changed in the bucket is never returned: a
// get with the bucket as its peer exits 4, and a read of that file
// through a serve process over the bucket fails with EIO while the rest of
// the tree reads.
func TestS3Tampered(t *testing.T) {
	testenv.RequireFUSE(t)
	srv := testenv.StartS3(t)
	srv.MakeBucket(t, "e2e-tampered")
	f := publishS3(t, srv, "e2e-tampered", testenv.Sample())
	const victim = "data/size-00102400"
	ref := f.blockOf(t, victim)
	obj := srv.ObjectFile(f.bucket, "eris/v1/"+ref.String())
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0x01
	if err := os.WriteFile(obj, b, 0o644); err != nil {
		t.Fatal(err)
	}

	dest := filepath.Join(t.TempDir(), "out")
	_, errOut, code := testenv.RunEnv(t, srv.Env(), "get", f.urn, dest, "--store", filepath.Join(t.TempDir(), "empty.sqlite"), "--peer", f.url)
	if code != 4 {
		t.Errorf("get from a bucket with a tampered object: exit %d, want 4\n%s", code, errOut)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("get left %s behind: %v", dest, err)
	}

	_, url := f.serveS3(t)
	dir := t.TempDir()
	m := testenv.Start(t, "mount", f.urn, dir, "--store", filepath.Join(t.TempDir(), "empty.sqlite"),
		"--peer", url, "--deadline", "5s", "--tree-ahead", "0")
	testenv.WaitMounted(t, m, dir, time.Minute)
	if _, err := os.ReadFile(filepath.Join(dir, victim)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the file with a tampered block: %v, want EIO", err)
	}
	want, _ := os.ReadFile(filepath.Join(f.src, "data/size-01048579"))
	if got, err := os.ReadFile(filepath.Join(dir, "data/size-01048579")); err != nil || string(got) != string(want) {
		t.Errorf("another file: %d bytes, %v", len(got), err)
	}
	m.Interrupt(t, dir)
}

// TestS3Outage: the S3 server stopped in the middle of reading a mounted
// tree (through a serve process over the bucket) gives EIO by the mount's
// deadline and exit 3 to a get that reads the bucket directly; once the
// server is back, the same mount reads the rest.
func TestS3Outage(t *testing.T) {
	testenv.RequireFUSE(t)
	srv := testenv.StartS3(t)
	srv.MakeBucket(t, "e2e-outage")
	f := publishS3(t, srv, "e2e-outage", testenv.Sample())
	_, url := f.serveS3(t)
	dir := t.TempDir()
	const deadline = 3 * time.Second
	m := testenv.Start(t, "mount", f.urn, dir, "--store", filepath.Join(t.TempDir(), "empty.sqlite"),
		"--peer", url, "--deadline", deadline.String(), "--tree-ahead", "0")
	testenv.WaitMounted(t, m, dir, time.Minute)
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, "data", name)) }
	if _, err := read("size-00001025"); err != nil {
		t.Fatalf("read before the outage: %v", err)
	}

	srv.Stop()
	start := time.Now()
	_, err := read("size-00102400")
	took := time.Since(start)
	t.Logf("read with the S3 server down: %v after %v (deadline %v)", err, took, deadline)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with the S3 server down: %v, want EIO", err)
	}
	// Not a speed check: a bound far above the deadline, to catch a read
	// that waits for the server instead of failing.
	if took > deadline+30*time.Second {
		t.Errorf("EIO came after %v, long past the deadline of %v", took, deadline)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, errOut, code := testenv.RunEnv(t, srv.Env(), "get", f.urn, dest, "--store", filepath.Join(t.TempDir(), "empty.sqlite"), "--peer", f.url); code != 3 {
		t.Errorf("get from a stopped S3 server: exit %d, want 3\n%s", code, errOut)
	}

	srv.Start(t)
	want, _ := os.ReadFile(filepath.Join(f.src, "data/size-00102400"))
	var got []byte
	for end := time.Now().Add(2 * time.Minute); ; {
		// The mount backs off from a peer that failed (1 s, doubling):
		// the read works again at its next probe.
		if got, err = read("size-00102400"); err == nil || time.Now().After(end) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil || string(got) != string(want) {
		t.Fatalf("read once the S3 server is back: %d bytes, %v", len(got), err)
	}
	testenv.CompareDirs(t, f.src, dir)
	m.Interrupt(t, dir)
}

// TestS3WrongCredentials: publish, serve and get with a wrong secret say
// that access was denied and what to check, and never print the secret.
func TestS3WrongCredentials(t *testing.T) {
	srv := testenv.StartS3(t)
	srv.MakeBucket(t, "e2e-creds")
	src := testenv.Sample().WriteDir(t)
	url := srv.URL("e2e-creds", "eris/v1")
	const secret = "wrong-secret-do-not-print"
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + secret}
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"publish", []string{"publish", "--store", url, src}, 1},
		{"serve", []string{"serve", "--store", url, "--listen", "coap+tcp://127.0.0.1:0"}, 1},
		{"get", []string{"get", "urn:eris:BIAXTJIXGOVAGM3Z3IGNVI2FZ2PEXRHM53XZ7X3C3FWG4QC6OO6LMYZHTUMGCRBDU36L6JQSKWKHGQVUNMJBCYOHRBS7PDVN24KPIO3PPQ",
			filepath.Join(t.TempDir(), "out"), "--store", filepath.Join(t.TempDir(), "c.sqlite"), "--peer", url}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := testenv.RunEnv(t, env, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if !strings.Contains(errOut, "access denied") || !strings.Contains(errOut, "AWS_SECRET_ACCESS_KEY") {
				t.Errorf("stderr does not say access was denied and what to check:\n%s", errOut)
			}
			if strings.Contains(out+errOut, secret) {
				t.Errorf("the secret was printed:\n%s%s", out, errOut)
			}
		})
	}
	if _, errOut, code := testenv.Run(t, "publish", "--store", "s3://"+srv.AccessKey+":"+secret+"@e2e-creds/p", src); code != 2 ||
		strings.Contains(errOut, secret) || !strings.Contains(errOut, "credentials do not go in the URL") {
		t.Errorf("keys in the URL: exit %d, want 2 and a hint without the secret:\n%s", code, errOut)
	}
}

// TestS3ServeAllowPut: a block uploaded to a serve process over a bucket
// (--allow-put) is in the bucket when the upload is answered, so another
// serve process over the same bucket serves it; a block that does not
// match its reference is refused and never reaches the bucket.
func TestS3ServeAllowPut(t *testing.T) {
	srv := testenv.StartS3(t)
	srv.MakeBucket(t, "e2e-put")
	f := &s3Fixture{srv: srv, bucket: "e2e-put", url: srv.URL("e2e-put", "eris/v1")}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := l.Addr().String()
	l.Close()
	_, urlA := f.serveS3(t, "--allow-put", "--metrics", metrics)
	_, urlB := f.serveS3(t)
	a, b := testenv.Dial(t, urlA), testenv.Dial(t, urlB)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	block := testenv.Random(42, eris.BlockSize32K)
	ref := eris.RefOf(block)
	if err := a.PutBlock(ctx, ref, block); err != nil {
		t.Fatalf("PUT to serve --allow-put over S3: %v", err)
	}
	if got, err := os.ReadFile(srv.ObjectFile(f.bucket, "eris/v1/"+ref.String())); err != nil || string(got) != string(block) {
		t.Fatalf("object in the bucket after the PUT: %d bytes, %v", len(got), err)
	}
	if got, err := b.GetBlock(ctx, ref); err != nil || string(got) != string(block) {
		t.Fatalf("the other serve process: %d bytes, %v", len(got), err)
	}

	other := testenv.Random(43, eris.BlockSize1K)
	wrong := eris.RefOf(testenv.Random(44, eris.BlockSize1K))
	if err := a.PutBlock(ctx, wrong, other); err == nil {
		t.Fatal("PUT of a block under another block's reference was accepted")
	}
	if n, _ := srv.Objects(t, f.bucket, "eris/v1"); n != 1 {
		t.Errorf("%d objects in the bucket, want the 1 good block", n)
	}

	// What the bucket was sent, as /metrics says: one HEAD and one PUT
	// for the upload (plus the listing that checked the bucket at start).
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`erismount_s3_requests_total{method="PUT",`, `erismount_s3_requests_total{method="HEAD",`, `erismount_s3_blocks_total{outcome="uploaded",`} {
		if !regexp.MustCompile(regexp.QuoteMeta(want) + `[^}]*\} 1\n`).Match(body) {
			t.Errorf("/metrics has no erismount_s3_… %s:\n%s", want, grepLines(string(body), "erismount_s3_"))
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
