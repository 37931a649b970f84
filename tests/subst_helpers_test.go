package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"erismount/cache"
	"erismount/eris"
	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/tests/testenv"
)

// putPeer is a peer that accepts PUT, as `erismount serve --allow-put`
// over a SQLite store: publish sends blocks to it, the substitute server
// fetches them from it.
type putPeer struct {
	URL   string
	Store *cache.SQLite
	// bad holds blocks the peer corrupts when asked for them (a lying
	// peer); the store keeps the good ones.
	mu  sync.Mutex
	bad map[eris.Ref]bool
}

func (p *putPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	b, err := p.Store.GetBlock(ctx, ref)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.bad[ref] {
		b[len(b)/2] ^= 0x10
	}
	return b, err
}

func (p *putPeer) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	return p.Store.PutBlock(ctx, ref, b)
}

// corrupt makes the peer corrupt the blocks refs.
func (p *putPeer) corrupt(refs map[eris.Ref]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bad = refs
}

// servePutPeer starts a peer on scheme ("coap", "coap+tcp", "http") on
// loopback until the test ends.
func servePutPeer(t testing.TB, scheme string) *putPeer {
	t.Helper()
	p := &putPeer{Store: testenv.SQLite(t, filepath.Join(t.TempDir(), "peer.sqlite"))}
	p.URL = p.listen(t, scheme)
	return p
}

// listen serves the peer's store on one more listener and returns its
// URL. A new listener starts without the blocks an earlier one kept for
// block-wise transfers, so a fault set with corrupt shows at once.
func (p *putPeer) listen(t testing.TB, scheme string) string {
	t.Helper()
	srv := fetcher.NewServer(p, fetcher.ServerOptions{AllowPut: true, Logger: testenv.Logger(t)})
	url, err := srv.Listen(context.Background(), scheme+"://127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatalf("serve blocks: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return url
}

// nixKeys writes a Nix key pair into dir as NAME.sec and NAME.pub and
// returns their paths and the public key.
func nixKeys(t testing.TB, dir, name string) (sec, pub string, key narinfo.NixPublicKey) {
	t.Helper()
	k, err := narinfo.GenerateNixKey(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	sec, pub = filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(sec, []byte(k.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, []byte(k.Public().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return sec, pub, k.Public()
}

// guixKeys writes a Guix key pair into dir as NAME.sec and NAME.pub.
func guixKeys(t testing.TB, dir, name string) (sec, pub string, key *narinfo.PrivateKey) {
	t.Helper()
	k, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sec, pub = filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub")
	text, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	ptext, err := k.Public().MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sec, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, ptext, 0o644); err != nil {
		t.Fatal(err)
	}
	return sec, pub, k
}

// erismount runs an erismount command to completion, failing the test
// unless it exits 0; it returns stdout.
func erismount(t testing.TB, args ...string) string {
	t.Helper()
	out, stderr, code := testenv.Run(t, args...)
	if code != 0 {
		t.Fatalf("erismount %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return out
}

// startSubstituteServer starts substitute-server with an empty cache and returns its URL.
func startSubstituteServer(t testing.TB, args ...string) (string, *testenv.Process) {
	return testenv.StartSubstituteServer(t, args...)
}
