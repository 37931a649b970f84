package testenv

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGW is the S3 server the tests run: versitygw (Apache-2.0) over a
// directory, installed by .ci/run with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// It is looked up as $ERISMOUNT_VERSITYGW, then on PATH, then in
// $(go env GOBIN) and $(go env GOPATH)/bin.
const VersityGW = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// S3Server is a real S3-compatible service on loopback: versitygw with its
// posix back end over a temporary directory, where a bucket is a directory
// and an object a file. Stop and Start take it down and up again on the
// same address with the same data, as an outage does.
type S3Server struct {
	// Endpoint is http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the root account's.
	AccessKey, SecretKey string
	// Dir holds the buckets: Dir/BUCKET/KEY is an object's content.
	Dir string

	bin  string
	addr string
	log  *SyncBuffer
	proc *exec.Cmd
	done chan struct{}
}

// versityGW finds the versitygw binary; "" when it is not installed.
func versityGW() string {
	if p := os.Getenv("ERISMOUNT_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	for _, v := range []string{"GOBIN", "GOPATH"} {
		out, err := exec.Command("go", "env", v).Output()
		dir := strings.TrimSpace(string(out))
		if err != nil || dir == "" {
			continue
		}
		if v == "GOPATH" {
			dir = filepath.Join(filepath.SplitList(dir)[0], "bin")
		}
		if p := filepath.Join(dir, "versitygw"); isExec(p) {
			return p
		}
	}
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// StartS3 starts an S3 server on a free loopback port and stops it when
// the test ends. Without the versitygw binary it skips the test, except
// under CI (CI=true), where the binary must be there and its absence
// fails the test.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin := versityGW()
	if bin == "" {
		msg := "testenv: versitygw not installed (go install " + VersityGW + ", as .ci/run does)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; under CI it must be")
		}
		t.Skip(msg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: pick a port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &S3Server{
		Endpoint:  "http://" + addr,
		AccessKey: "erismount-test",
		SecretKey: "erismount-test-secret-" + strconv.Itoa(os.Getpid()),
		Dir:       t.TempDir(),
		bin:       bin,
		addr:      addr,
		log:       &SyncBuffer{},
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", s.log.String())
		}
	})
	s.Start(t)
	return s
}

// Start starts the server (again) on its address over its directory and
// waits until it accepts connections.
func (s *S3Server) Start(t testing.TB) {
	t.Helper()
	if s.proc != nil {
		t.Fatal("testenv: S3 server already running")
	}
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", "us-east-1", "--quiet", "--keep-alive", // as any real deployment
		"posix", "--io-buffer-size", "65536", s.Dir)
	// Keys are given as flags; the server must not see a test's AWS_* or
	// ROOT_* variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "ROOT_") && !strings.HasPrefix(kv, "VGW_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start versitygw: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.proc, s.done = cmd, done
	end := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			s.proc = nil
			t.Fatalf("testenv: versitygw exited before listening on %s:\n%s", s.addr, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(end) {
			t.Fatalf("testenv: versitygw not listening on %s after a minute:\n%s", s.addr, s.log.String())
		}
	}
}

// Stop kills the server (an outage, not a clean shutdown) and waits for
// it to exit. It does nothing when the server is not running.
func (s *S3Server) Stop() {
	if s.proc == nil {
		return
	}
	s.proc.Process.Kill()
	<-s.done
	s.proc = nil
}

// URL is the s3:// URL of prefix in bucket on this server.
func (s *S3Server) URL(bucket, prefix string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?" + url.Values{"endpoint": {s.Endpoint}, "region": {"us-east-1"}}.Encode()
}

// Env is the environment that gives a client the root account's keys,
// the standard AWS way.
func (s *S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// Client is an S3 client with the root account's keys, for setting up
// and inspecting buckets behind the store's back.
func (s *S3Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatalf("testenv: S3 client: %v", err)
	}
	return c
}

// MakeBucket creates a bucket.
func (s *S3Server) MakeBucket(t testing.TB, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("testenv: make bucket %s: %v", bucket, err)
	}
}

// ObjectFile is the file that holds an object's content on the server.
func (s *S3Server) ObjectFile(bucket, key string) string {
	return filepath.Join(s.Dir, bucket, filepath.FromSlash(key))
}

// Objects counts the objects (files) under prefix in bucket, and their
// bytes.
func (s *S3Server) Objects(t testing.TB, bucket, prefix string) (n int, bytes int64) {
	t.Helper()
	root := filepath.Join(s.Dir, bucket, filepath.FromSlash(prefix))
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			st, err := d.Info()
			if err != nil {
				return err
			}
			n++
			bytes += st.Size()
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("testenv: count objects: %v", err)
	}
	return n, bytes
}

// CPUTime is the processor time (user and system) the running server has
// used so far, from /proc; 0 when it is not running or /proc says nothing.
func (s *S3Server) CPUTime() time.Duration {
	if s.proc == nil {
		return 0
	}
	return ProcessCPU(s.proc.Process.Pid)
}

// ProcessCPU is the processor time (user and system) process pid has used
// so far, from /proc; 0 when /proc says nothing.
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 a second
	// on Linux).
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}
