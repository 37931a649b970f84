package fetcher

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/udp"

	"erismount/eris"
)

// benchInFlight is the number of requests in flight in every benchmark.
const benchInFlight = 64

var benchSizes = []struct {
	name string
	size int
}{{"1K", eris.BlockSize1K}, {"32K", eris.BlockSize32K}}

// runInFlight calls get b.N times from benchInFlight goroutines; get
// returns the bytes it received. A failed request fails the benchmark,
// unless tolerant: then failures are reported as the metric "failed/op"
// (the stock go-coap UDP baseline times out requests under this load).
func runInFlight(b *testing.B, size int, get func(i int) ([]byte, error)) {
	runInFlightTolerant(b, size, false, get)
}

func runInFlightTolerant(b *testing.B, size int, tolerant bool, get func(i int) ([]byte, error)) {
	b.Helper()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var n, failed atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	b.ResetTimer()
	for range benchInFlight {
		wg.Go(func() {
			for {
				i := int(n.Add(1)) - 1
				if i >= b.N {
					return
				}
				got, err := get(i)
				if err == nil && len(got) != size {
					err = fmt.Errorf("got %d bytes, want %d", len(got), size)
				}
				if err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	// CPU time of the whole process (client and server) per request: what
	// a block costs whatever else the machine runs. 2 cores can move at
	// most 2e6/cpu-µs/op blocks per second.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	if tolerant {
		b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/op")
		return
	}
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d requests failed, first: %v", f, b.N, first.Load())
	}
}

// BenchmarkGetBlock measures Peer.GetBlock from our server over each
// transport, 64 requests in flight: server store read, transport, and
// client verification. Compare with BenchmarkBare, same payloads.
func BenchmarkGetBlock(b *testing.B) {
	for _, sz := range benchSizes {
		blocks := randomBlocks(b, 64, sz.size)
		store, refs := storeWith(b, blocks...)
		for _, tr := range allTransports {
			b.Run(tr.name+"-"+sz.name, func(b *testing.B) {
				_, urls := serve(b, store, ServerOptions{}, tr.listen)
				p := dial(b, urls[0], ClientOptions{})
				ctx := context.Background()
				runInFlight(b, sz.size, func(i int) ([]byte, error) {
					return p.GetBlock(ctx, refs[i%len(refs)])
				})
			})
		}
	}
}

// BenchmarkGetBlockRTT fetches 32 KiB blocks over CoAP/UDP through a
// proxy that delays every datagram by 5 ms (a 10 ms round trip), 4 blocks
// in flight, asking for 1, 4, 16 or 32 parts of a block at once
// (ClientOptions.BlockWindow; the default is 32): the latency a block costs
// on a real link.
func BenchmarkGetBlockRTT(b *testing.B) {
	blocks := randomBlocks(b, 16, eris.BlockSize32K)
	store, refs := storeWith(b, blocks...)
	_, urls := serve(b, store, ServerOptions{}, "coap://127.0.0.1:0")
	ep, _ := parseEndpoint(urls[0])
	proxy := startDelayProxy(b, ep.addr, func(bool) bool { return false }, 5*time.Millisecond)
	for _, w := range []int{1, 4, 16, 32} {
		b.Run(fmt.Sprintf("window%d", w), func(b *testing.B) {
			p := dial(b, "coap://"+proxy, ClientOptions{BlockWindow: w})
			ctx := context.Background()
			sem := make(chan struct{}, 4)
			var wg sync.WaitGroup
			b.SetBytes(eris.BlockSize32K)
			b.ResetTimer()
			for i := range b.N {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if _, err := p.GetBlock(ctx, refs[i%len(refs)]); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkPoolGetBlock is BenchmarkGetBlock through a Pool of one peer.
func BenchmarkPoolGetBlock(b *testing.B) {
	blocks := randomBlocks(b, 64, eris.BlockSize32K)
	store, refs := storeWith(b, blocks...)
	for _, tr := range allTransports {
		b.Run(tr.name+"-32K", func(b *testing.B) {
			_, urls := serve(b, store, ServerOptions{}, tr.listen)
			p, err := Dial(context.Background(), urls[0], ClientOptions{})
			if err != nil {
				b.Fatal(err)
			}
			pl := NewPool([]Peer{p}, PoolOptions{Window: benchInFlight})
			defer pl.Close()
			ctx := context.Background()
			runInFlight(b, eris.BlockSize32K, func(i int) ([]byte, error) {
				return pl.GetBlock(ctx, refs[i%len(refs)])
			})
		})
	}
}

// BenchmarkBare is the baseline of BenchmarkGetBlock: go-coap's own server
// and client (and net/http's), returning the same payload from memory,
// with no store, no block handling of ours and no verification. The
// go-coap clients get the options without which they serialize requests
// (parallel-request limits 0, NSTART 64). CoAP over UDP uses go-coap's
// udp.Server and block-wise transfer as they come; over TCP and Unix
// sockets block-wise is off so that one message carries the payload.
func BenchmarkBare(b *testing.B) {
	for _, sz := range benchSizes {
		payload := randomBlocks(b, 1, sz.size)[0]
		for _, tr := range []string{"udp", "tcp", "unix", "http"} {
			b.Run(tr+"-"+sz.name, func(b *testing.B) {
				var get func() ([]byte, error)
				switch tr {
				case "udp":
					get = bareUDP(b, payload)
				case "tcp", "unix":
					get = bareStream(b, tr, payload)
				default:
					get = bareHTTP(b, payload)
				}
				runInFlightTolerant(b, sz.size, tr == "udp", func(int) ([]byte, error) { return get() })
			})
		}
	}
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func bareRouter(payload []byte) *mux.Router {
	r := mux.NewRouter()
	_ = r.Handle("/blocks", mux.HandlerFunc(func(w mux.ResponseWriter, _ *mux.Message) {
		_ = w.SetResponse(codes.Content, message.AppOctets, bytes.NewReader(payload))
	}))
	return r
}

type bareConn interface {
	Get(ctx context.Context, path string, opts ...message.Option) (*pool.Message, error)
	ReleaseMessage(*pool.Message)
}

func bareGet(cc bareConn) func() ([]byte, error) {
	return func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cc.Get(ctx, "/blocks")
		if err != nil {
			return nil, err
		}
		defer cc.ReleaseMessage(resp)
		return resp.ReadBody()
	}
}

func bareUDP(b *testing.B, payload []byte) func() ([]byte, error) {
	l, err := coapnet.NewListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tick := newPeriodic(time.Second) // go-coap's default runner outlives Stop by 4 s
	srv := udp.NewServer(options.WithMux(bareRouter(payload)), options.WithErrors(func(error) {}), options.WithPeriodicRunner(tick.add))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	cc, err := udp.Dial(l.LocalAddr().String(),
		options.WithErrors(func(error) {}),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
		options.WithTransmission(benchInFlight, 2*time.Second, 4),
		options.WithPeriodicRunner(tick.add))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close(); srv.Stop(); <-done; tick.stop() })
	return bareGet(cc)
}

func bareStream(b *testing.B, network string, payload []byte) func() ([]byte, error) {
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = b.TempDir() + "/bare.sock"
	}
	nl, err := net.Listen(network, addr)
	if err != nil {
		b.Fatal(err)
	}
	tick := newPeriodic(time.Second)
	srv := tcp.NewServer(options.WithMux(bareRouter(payload)), options.WithErrors(func(error) {}),
		options.WithBlockwise(false, blockwise.SZX1024, time.Second), options.WithPeriodicRunner(tick.add))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(&acceptListener{l: nl}) }()
	c, err := net.Dial(network, nl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	cc, err := tcp.Client(c, options.WithErrors(func(error) {}), options.WithCloseSocket(),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
		options.WithBlockwise(false, blockwise.SZX1024, time.Second), options.WithPeriodicRunner(tick.add))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close(); srv.Stop(); <-done; tick.stop() })
	return bareGet(cc)
}

func bareHTTP(b *testing.B, payload []byte) func() ([]byte, error) {
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(payload)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(nl) }()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = benchInFlight
	client := &http.Client{Transport: tr}
	url := "http://" + nl.Addr().String() + "/blocks"
	b.Cleanup(func() { tr.CloseIdleConnections(); srv.Close(); <-done })
	return func() ([]byte, error) {
		resp, err := client.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
}
