package eris_test

import (
	"context"
	"flag"
	"io"
	"runtime"
	"testing"
	"time"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/chacha20"

	"erismount/eris"
)

var long = flag.Bool("long", false, "run the 1 GiB large-content check")

// watchHeap samples the live heap until the returned function is called,
// which returns the peak seen.
func watchHeap() func() uint64 {
	runtime.GC()
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(stop); return <-done }
}

// keystream is the spec's large-content generator: the ChaCha20 keystream
// (null nonce) under the key Blake2b-256(name), size bytes long. The URNs
// below are the spec's (§ "Large content"), also used by the Rust and Nim
// implementations' tests.
type keystream struct {
	c    *chacha20.Cipher
	left int64
}

func newKeystream(name string, size int64) *keystream {
	key := blake2b.Sum256([]byte(name))
	var nonce [chacha20.NonceSize]byte
	c, err := chacha20.NewUnauthenticatedCipher(key[:], nonce[:])
	if err != nil {
		panic(err)
	}
	return &keystream{c: c, left: size}
}

func (k *keystream) Read(p []byte) (int, error) {
	if k.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > k.left {
		p = p[:k.left]
	}
	clear(p)
	k.c.XORKeyStream(p, p)
	k.left -= int64(len(p))
	return len(p), nil
}

// discard is a BlockPutter that keeps nothing: the large checks are about
// the URN and bounded memory, not storage.
type discard struct{}

func (discard) PutBlock(context.Context, eris.Ref, []byte) error { return nil }

func TestLargeContent(t *testing.T) {
	cases := []struct {
		name      string
		size      int64
		blockSize int
		urn       string
		long      bool
	}{
		{"100MiB (block size 1KiB)", 100 << 20, eris.BlockSize1K,
			"urn:eris:BIC6F5EKY2PMXS2VNOKPD3AJGKTQBD3EXSCSLZIENXAXBM7PCTH2TCMF5OKJWAN36N4DFO6JPFZBR3MS7ECOGDYDERIJJ4N5KAQSZS67YY", false},
		{"1GiB (block size 32KiB)", 1 << 30, eris.BlockSize32K,
			"urn:eris:B4BL4DKSEOPGMYS2CU2OFNYCH4BGQT774GXKGURLFO5FDXAQQPJGJ35AZR3PEK6CVCV74FVTAXHRSWLUUNYYA46ZPOPDOV2M5NVLBETWVI", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.long && !*long {
				t.Skip("1 GiB case runs with -long")
			}
			if testing.Short() {
				t.Skip("large content skipped in -short mode")
			}
			peak := watchHeap()
			rc, st, err := eris.EncodeStats(context.Background(), newKeystream(c.name, c.size), discard{},
				eris.EncodeOptions{BlockSize: c.blockSize})
			heap := peak()
			if err != nil {
				t.Fatal(err)
			}
			// Memory is bounded by the window of batches and one node per
			// level, not by the content: far below the content size.
			t.Logf("peak heap while encoding %d MiB: %.1f MiB", c.size>>20, float64(heap)/(1<<20))
			if heap > 64<<20 {
				t.Errorf("peak heap %d MiB while encoding %d MiB: memory is not bounded", heap>>20, c.size>>20)
			}
			if rc.URN() != c.urn {
				t.Errorf("URN\n got %s\nwant %s", rc.URN(), c.urn)
			}
			if st.Size != c.size {
				t.Errorf("encoded %d bytes, want %d", st.Size, c.size)
			}
		})
	}
}
