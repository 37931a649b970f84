package eris_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	erisgo "github.com/andrew-d/eris-go"
	"golang.org/x/crypto/blake2b"

	"erismount/eris"
	"erismount/eris/eristest"
)

// benchSize is the content encoded per benchmark iteration.
const benchSize = 32 << 20

func benchContent() []byte {
	b := make([]byte, benchSize)
	newKeystream("bench", benchSize).Read(b)
	return b
}

// BenchmarkHashEncryptLimit is the physical limit Encode and Decode are
// judged against: per block only the keyed Blake2b-256 (the key), ChaCha20
// (the encryption, with the same fastest primitive the codec uses) and
// Blake2b-256 (the reference), on all cores, with no tree, no I/O and no
// copying.
func BenchmarkHashEncryptLimit(b *testing.B) {
	for _, bs := range []int{eris.BlockSize32K, eris.BlockSize1K} {
		b.Run(fmt.Sprintf("bs=%d", bs), func(b *testing.B) {
			content := benchContent()
			workers := runtime.GOMAXPROCS(0)
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				var wg sync.WaitGroup
				per := len(content) / bs / workers
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var secret [32]byte
						h, _ := blake2b.New256(secret[:])
						var key eris.Key
						for i := w * per; i < (w+1)*per; i++ {
							blk := content[i*bs : (i+1)*bs]
							h.Reset()
							h.Write(blk)
							h.Sum(key[:0])
							eris.XORBlockForTest(blk, blk, &key, 0)
							_ = blake2b.Sum256(blk)
						}
					}()
				}
				wg.Wait()
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bs := range []int{eris.BlockSize32K, eris.BlockSize1K} {
		b.Run(fmt.Sprintf("bs=%d", bs), func(b *testing.B) {
			content := benchContent()
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := eris.Encode(context.Background(), bytes.NewReader(content), discard{}, eris.EncodeOptions{BlockSize: bs}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeErisGo encodes the same content with
// github.com/andrew-d/eris-go v0.0.1, another Go implementation.
func BenchmarkEncodeErisGo(b *testing.B) {
	for _, bs := range []int{eris.BlockSize32K, eris.BlockSize1K} {
		b.Run(fmt.Sprintf("bs=%d", bs), func(b *testing.B) {
			content := benchContent()
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				enc := erisgo.NewEncoder(bytes.NewReader(content), [32]byte{}, bs)
				for enc.Next() {
					_ = enc.Block()
				}
				if enc.Err() != nil {
					b.Fatal(enc.Err())
				}
			}
		})
	}
}

// BenchmarkDecode reads the content back in 1 MiB ReadAt calls from an
// in-memory store (which copies each block out, as a real store does).
func BenchmarkDecode(b *testing.B) {
	for _, bs := range []int{eris.BlockSize32K, eris.BlockSize1K} {
		b.Run(fmt.Sprintf("bs=%d", bs), func(b *testing.B) {
			content := benchContent()
			s := eristest.NewStore()
			rc, err := eris.Encode(context.Background(), bytes.NewReader(content), s, eris.EncodeOptions{BlockSize: bs})
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				r, _ := eris.NewReader(context.Background(), rc, s)
				for off := int64(0); ; off += int64(len(buf)) {
					n, err := r.ReadAt(buf, off)
					if err == io.EOF {
						break
					}
					if err != nil || n != len(buf) {
						b.Fatal(n, err)
					}
				}
			}
		})
	}
}

// BenchmarkEncodeSmall encodes a 4 KiB file, the common case of a store
// item's files: no goroutines, pooled buffers.
func BenchmarkEncodeSmall(b *testing.B) {
	content := benchContent()[:4096]
	b.SetBytes(int64(len(content)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eris.Encode(context.Background(), bytes.NewReader(content), discard{}, eris.EncodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteTo streams content from a store that answers each block
// after 200µs, like a near peer: what WriteTo's leaves in flight buy.
func BenchmarkWriteTo(b *testing.B) {
	content := benchContent()
	s := eristest.NewStore()
	rc, err := eris.Encode(context.Background(), bytes.NewReader(content), s, eris.EncodeOptions{BlockSize: eris.BlockSize32K})
	if err != nil {
		b.Fatal(err)
	}
	slow := delayedStore{s, 200 * time.Microsecond}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		r, _ := eris.NewReader(context.Background(), rc, slow)
		if n, err := r.WriteTo(io.Discard); err != nil || n != benchSize {
			b.Fatal(n, err)
		}
	}
}

// delayedStore answers after a delay.
type delayedStore struct {
	*eristest.Store
	d time.Duration
}

func (s delayedStore) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	time.Sleep(s.d)
	return s.Store.GetBlock(ctx, ref)
}
