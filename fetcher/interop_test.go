package fetcher

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"erismount/eris"
)

// coapClient finds Debian's libcoap3 client, or skips the test.
func coapClient(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Skip("coap-client-notls not found in PATH (Debian package libcoap3-bin): interop with libcoap not tested")
	}
	return p
}

// runCoAPClient runs coap-client-notls with args and returns its combined
// output; a run that does not finish in 30 seconds fails the test.
func runCoAPClient(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-B", "20"}, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("coap-client-notls %v did not finish: %s", args, out)
	}
	return string(out), err
}

// TestInteropCoAPClientGet fetches blocks from our server with libcoap's
// client: over UDP (32 KiB blocks come block-wise, RFC 7959) and over TCP
// (RFC 8323), and compares the bytes.
func TestInteropCoAPClientGet(t *testing.T) {
	bin := coapClient(t)
	blocks := append(randomBlocks(t, 1, eris.BlockSize1K), randomBlocks(t, 2, eris.BlockSize32K)...)
	store, refs := storeWith(t, blocks...)
	_, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0", "coap+tcp://127.0.0.1:0")
	cases := []struct {
		name string
		url  string
		args []string
	}{
		{"udp", urls[0], nil},
		{"udp early 512-byte blocks", urls[0], []string{"-b", "512"}},
		{"tcp", urls[1], nil},
	}
	dir := t.TempDir()
	for _, c := range cases {
		for i, ref := range refs {
			out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+ref.Str())
			args := append(append([]string{"-m", "get", "-o", out}, c.args...), c.url+"/blocks?"+ref.String())
			msg, err := runCoAPClient(t, bin, args...)
			if err != nil {
				t.Fatalf("%s block %d: coap-client-notls: %v\n%s", c.name, i, err, msg)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%s block %d: %v (client said %q)", c.name, i, err, msg)
			}
			if !bytes.Equal(got, blocks[i]) {
				t.Fatalf("%s block %d: coap-client-notls got %d bytes, differing from the %d stored", c.name, i, len(got), len(blocks[i]))
			}
		}
	}
	// The 32 KiB block really came over UDP in 1 KiB blocks: libcoap's
	// debug output lists the Block2 option of each response.
	msg, err := runCoAPClient(t, bin, "-v", "7", "-m", "get", "-o", filepath.Join(dir, "debug"), urls[0]+"/blocks?"+refs[1].String())
	if err != nil || !strings.Contains(msg, "Block2:31/_/1024") {
		t.Errorf("32 KiB block over UDP: no Block2 for the 32nd 1 KiB block in coap-client-notls's debug output (%v):\n%.2000s", err, msg)
	}
	// A missing block is 4.04.
	msg, _ = runCoAPClient(t, bin, "-m", "get", urls[0]+"/blocks?"+eris.RefOf(nil).String())
	if !strings.Contains(msg, "4.04") {
		t.Errorf("missing block: coap-client-notls said %q, want 4.04", msg)
	}
}

// TestInteropCoAPClientPut uploads blocks with libcoap's client: a block
// whose reference matches is stored, one sent under another block's
// reference is refused with 4.00 and not stored.
func TestInteropCoAPClientPut(t *testing.T) {
	bin := coapClient(t)
	blocks := append(randomBlocks(t, 1, eris.BlockSize1K), randomBlocks(t, 1, eris.BlockSize32K)...)
	dir := t.TempDir()
	files := make([]string, len(blocks))
	for i, b := range blocks {
		files[i] = filepath.Join(dir, "block"+string(rune('0'+i)))
		if err := os.WriteFile(files[i], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range []struct{ name, listen string }{{"udp", "coap://127.0.0.1:0"}, {"tcp", "coap+tcp://127.0.0.1:0"}} {
		t.Run(tr.name, func(t *testing.T) {
			store, _ := storeWith(t)
			_, urls := serve(t, store, ServerOptions{AllowPut: true}, tr.listen)
			for i, b := range blocks {
				ref := eris.RefOf(b)
				other := eris.RefOf(blocks[1-i])
				msg, err := runCoAPClient(t, bin, "-m", "put", "-f", files[i], urls[0]+"/blocks?"+other.String())
				if !strings.Contains(msg, "4.00") {
					t.Errorf("block %d under a wrong reference: coap-client-notls said %q (%v), want 4.00", i, msg, err)
				}
				if store.Len() != 0 {
					t.Fatalf("block %d under a wrong reference was stored", i)
				}
				msg, err = runCoAPClient(t, bin, "-m", "put", "-f", files[i], urls[0]+"/blocks?"+ref.String())
				if err != nil {
					t.Fatalf("block %d: coap-client-notls: %v\n%s", i, err, msg)
				}
				got, err := store.GetBlock(context.Background(), ref)
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("block %d (%d bytes) not stored after PUT (%v); client said %q", i, len(b), err, msg)
				}
				store.Delete(ref)
			}
		})
	}
}

// TestInteropLibcoapServer fetches blocks with our UDP client from
// libcoap's example server (coap-server-notls, a resource made by a PUT
// of libcoap's client): a 32 KiB block comes block-wise as libcoap sends
// it (RFC 7959), a 1 KiB block in one datagram, and a block under
// another's reference is refused as corrupt.
func TestInteropLibcoapServer(t *testing.T) {
	client := coapClient(t)
	server, err := exec.LookPath("coap-server-notls")
	if err != nil {
		t.Skip("coap-server-notls not found in PATH (Debian package libcoap3-bin): our client against libcoap's server not tested")
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	pc.Close()
	srv := exec.Command(server, "-A", "127.0.0.1", "-p", port, "-d", "4")
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	url := "coap://127.0.0.1:" + port
	resource := url + "/.well-known/eris/blocks"
	put := func(block []byte) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "block")
		if err := os.WriteFile(f, block, 0o644); err != nil {
			t.Fatal(err)
		}
		var msg string
		var err error
		for range 50 { // until the server answers
			if msg, err = runCoAPClient(t, client, "-m", "put", "-b", "1024", "-f", f, resource); err == nil && !strings.Contains(msg, "4.") && !strings.Contains(msg, "5.") {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("PUT to coap-server-notls: %v %q; server said:\n%s", err, msg, srvOut.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	peer, err := Dial(ctx, url, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	big := randomBlocks(t, 1, eris.BlockSize32K)[0]
	small := randomBlocks(t, 1, eris.BlockSize1K)[0]
	put(big)
	if got, err := peer.GetBlock(ctx, eris.RefOf(big)); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("32 KiB block from libcoap's server: %d bytes, %v", len(got), err)
	}
	put(small)
	if got, err := peer.GetBlock(ctx, eris.RefOf(small)); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("1 KiB block from libcoap's server: %d bytes, %v", len(got), err)
	}
	// The resource now holds the small block: asked for the big one, the
	// server sends the small one, which must not pass.
	if got, err := peer.GetBlock(ctx, eris.RefOf(big)); !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("a block under another's reference: %d bytes, %v; want ErrCorrupt", len(got), err)
	}
}
