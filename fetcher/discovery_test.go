package fetcher

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"erismount/eris"
)

// inNetns runs f on a thread of its own in the network namespace ns (the
// thread is thrown away afterwards). Sockets f opens stay in ns.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, e := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if e != nil {
			err = e
			return
		}
		defer unix.Close(fd)
		if err = unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return
		}
		f()
	}()
	<-done
	if err != nil {
		t.Fatalf("enter network namespace %s: %v", ns, err)
	}
}

// testNetns makes a network namespace whose loopback carries multicast,
// deleted at the end of the test; it skips without root or ip(8).
func testNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not found")
	}
	ns := fmt.Sprintf("erisfetch%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "link", "set", "lo", "multicast", "on")
	ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "lo")
	return ns
}

// TestDiscoverOnLink runs servers and Discover in a network namespace of
// the test's own: a listener is found only when it is discoverable, a node
// does not find itself, and the URL found serves blocks.
func TestDiscoverOnLink(t *testing.T) {
	noLeaks(t)
	ns := testNetns(t)
	blocks := randomBlocks(t, 2, eris.BlockSize32K)
	store, refs := storeWith(t, blocks...)
	ctx := context.Background()
	inNetns(t, ns, func() {
		hidden := NewServer(store, ServerOptions{})
		if _, err := hidden.Listen(ctx, "coap://0.0.0.0:5683"); err != nil {
			t.Error(err)
			return
		}
		found, err := Discover(ctx, DiscoverOptions{})
		hidden.Close()
		if err != nil || len(found) != 0 {
			t.Errorf("a listener not discoverable was found: %v (%v)", found, err)
		}

		srv := NewServer(store, ServerOptions{Discoverable: true})
		defer srv.Close()
		self, err := srv.Listen(ctx, "coap://0.0.0.0:5683")
		if err != nil {
			t.Error(err)
			return
		}
		if found, _ := Discover(ctx, DiscoverOptions{Self: []string{self}}); len(found) != 0 {
			t.Errorf("a node found itself: %v", found)
		}
		found, err = Discover(ctx, DiscoverOptions{})
		if err != nil || len(found) != 1 || found[0] != "coap://127.0.0.1:5683/.well-known/eris" {
			t.Errorf("discovered %v (%v), want the one store", found, err)
			return
		}
		// Two rounds found it, each asking twice (DiscoverNodes).
		if n := srv.Stats().Discoveries; n != 4 {
			t.Errorf("%d discovery requests answered, want 4", n)
		}
		p, err := Dial(ctx, found[0], ClientOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		defer p.Close()
		for i, ref := range refs {
			if b, err := p.GetBlock(ctx, ref); err != nil || !bytes.Equal(b, blocks[i]) {
				t.Errorf("block %d from the store found: %v", i, err)
			}
		}
	})
}
