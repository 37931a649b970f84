package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"erismount/tests/testenv"
)

// TestMain removes the erismount binary testenv builds.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestBench runs the whole harness — tree, server, shaped links, the whole
// nar, the real erismount binary cold, warm and hot over both transports —
// on a tiny tree, so that CI proves the benchmark works. It asserts no
// timings, only that every operation ran, checked what it read, and was
// reported.
func TestBench(t *testing.T) {
	testenv.RequireFUSE(t)
	cfg := Config{
		Files:      40,
		Bytes:      3 << 20,
		Seed:       1,
		Shape:      Shape{RTT: 2 * time.Millisecond, Rate: 200e6},
		Runs:       1,
		Transports: []string{"coap", "coap+tcp"},
		Readers:    4,
		Erismount:  testenv.Erismount(t),
		WorkDir:    t.TempDir(),
		Logger:     testenv.Logger(t),
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, op := range res.Ops {
		cells := map[string]Cell{"nar": res.Nar[i], "warm": res.Warm[i], "hot": res.Hot[i]}
		for _, tr := range cfg.Transports {
			cells["cold "+tr] = res.Cold[tr][i]
		}
		for name, c := range cells {
			if len(c) != cfg.Runs {
				t.Errorf("%s, %s: %d samples, want %d", op.Key, name, len(c), cfg.Runs)
			}
			for _, s := range c {
				if s.Err != nil {
					t.Errorf("%s, %s: %v", op.Key, name, s.Err)
				}
			}
		}
		if fetched := res.Wire["coap"][i][0]; fetched <= 0 {
			t.Errorf("%s: a cold run fetched %d bytes", op.Key, fetched)
		}
	}
	// Laziness, the point of the table: listing and one small file
	// fetch less than the tree, reading everything fetches all of it.
	ls, all := res.op(opLsSmall), res.op(opReadAll)
	if got := res.Wire["coap"][ls][0]; got >= res.Tree.Bytes {
		t.Errorf("ls -R + one small file fetched %d bytes of a %d-byte tree", got, res.Tree.Bytes)
	}
	if got := res.Wire["coap"][all][0]; got < res.Tree.Bytes {
		t.Errorf("reading everything fetched %d bytes of a %d-byte tree", got, res.Tree.Bytes)
	}

	var out bytes.Buffer
	res.Markdown(&out, "go run ./tests/bench -test")
	md := out.String()
	t.Log("\n" + md)
	for _, want := range []string{
		"| operation | whole nar over HTTP | lazy cold, CoAP/UDP | speed-up | lazy cold, CoAP/TCP | speed-up |",
		"`ls -R` + read one small file", "run one program", "read everything (4 readers)",
		"goal ≥ 5×", "goal ≤ 1.5×", "Command: `go run ./tests/bench -test`", "load average",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

// TestRunMainErrors checks that bad flags are refused before anything
// runs.
func TestRunMainErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown transport", []string{"-transports", "http"}, `"http" is not coap or coap+tcp`},
		{"stray argument", []string{"now"}, "unexpected arguments"},
		{"unknown flag", []string{"-fast"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runMain(context.Background(), tc.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("runMain(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

// The shaped link only ever delays: a round trip takes at least the RTT
// and n bytes at least n/rate, however loaded the machine is. These are
// lower bounds, which load cannot make fail.

func TestShapeUDP(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	const rtt = 30 * time.Millisecond
	p, err := ShapeUDP(echo.LocalAddr().String(), Shape{RTT: rtt})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("udp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 3 {
		msg := []byte{byte(i), 'p', 'i', 'n', 'g'}
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t0); took < rtt {
			t.Errorf("round trip %d took %v, less than the RTT %v", i, took, rtt)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Errorf("echo %q, want %q", buf[:n], msg)
		}
	}
	if st := p.Stats(); st.UpItems != 3 || st.DownItems != 3 || st.Up != 3*(5+udpOverhead) {
		t.Errorf("stats %+v, want 3 datagrams of 5 bytes each way", st)
	}
}

func TestShapeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	payload := testenv.Random(3, 256<<10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(payload)
	}()
	const rate = 8e6 // bits/s: 1 MB/s, so 256 KiB take at least 262 ms
	p, err := ShapeTCP(ln.Addr().String(), Shape{RTT: 10 * time.Millisecond, Rate: rate, Queue: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	t0 := time.Now()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes, not the %d sent", len(got), len(payload))
	}
	if min := time.Duration(float64(len(payload)) * 8 / rate * float64(time.Second)); time.Since(t0) < min {
		t.Errorf("%d bytes took %v, less than %v at %g bit/s", len(payload), time.Since(t0), min, rate)
	}
}
