package subst_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"erismount/eris/eristest"
	"erismount/narinfo"
	"erismount/narinfo/publish"
	"erismount/narinfo/subst"
)

// Publish a store item with a Nix key, then serve it to Nix clients with
// the server's own key.
func Example() {
	ctx := context.Background()
	tmp, _ := os.MkdirTemp("", "subst-example-")
	defer os.RemoveAll(tmp)
	item := filepath.Join(tmp, "hello")
	os.WriteFile(item, []byte("hello\n"), 0o644)

	blocks := eristest.NewStore() // in real life: a peer, or SQLite
	publisher, _ := narinfo.GenerateNixKey("publisher-1", nil)
	res, err := publish.Items(ctx, []publish.Item{{
		StorePath: "/nix/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-hello",
		Path:      item,
	}}, blocks, publish.Options{NixKey: &publisher})
	if err != nil {
		fmt.Println(err)
		return
	}
	publish.WriteNarinfo(tmp, res[0])

	own, _ := narinfo.GenerateNixKey("loopback-1", nil)
	srv, err := subst.New(subst.Dir(tmp), blocks, subst.Options{
		StoreDir: "/nix/store",
		NixKey:   &own,
		Trust:    subst.Trust{NixKeys: []narinfo.NixPublicKey{publisher.Public()}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.Serve(ctx, ln)

	resp, err := http.Get("http://" + ln.Addr().String() + "/0q7pcz9hnscl1x29v4nws03i2ii5c8vc.narinfo")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for range 4 {
		lines.Scan()
		fmt.Println(lines.Text())
	}
	// Output:
	// StorePath: /nix/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-hello
	// URL: nar/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-hello
	// Compression: none
	// FileSize: 120
}
