package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Swarm is a link-local network of its own for a test: n network
// namespaces, each with one veth interface (eth0, 10.231.0.i+1/24, with
// the multicast routes CoAP discovery needs) on a bridge in a namespace of
// its own. Nothing is configured outside these namespaces; they are
// deleted when the test ends.
type Swarm struct {
	names []string
}

// NewSwarm makes a swarm of n nodes, or skips the test without root or
// ip(8).
func NewSwarm(t testing.TB, n int) *Swarm {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not found")
	}
	if n > 200 {
		t.Fatalf("testenv: a swarm of %d nodes", n)
	}
	tag := fmt.Sprintf("eris%d", os.Getpid())
	bridge := tag + "br"
	s := &Swarm{}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", bridge)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", bridge).Run() })
	ip("-n", bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	ip("-n", bridge, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%sn%d", tag, i)
		ip("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		s.names = append(s.names, ns)
		port := fmt.Sprintf("vb%d", i)
		ip("-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ip("-n", bridge, "link", "set", port, "master", "br0", "up")
		ip("-n", ns, "link", "set", "lo", "up")
		ip("-n", ns, "addr", "add", s.Addr(i)+"/24", "dev", "eth0")
		ip("-n", ns, "link", "set", "eth0", "up")
		ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
	}
	return s
}

// Name is the network namespace of node i.
func (s *Swarm) Name(i int) string { return s.names[i] }

// Addr is the IPv4 address of node i.
func (s *Swarm) Addr(i int) string { return fmt.Sprintf("10.231.0.%d", i+1) }

// Command is a command run in node i's namespace (ip netns exec).
func (s *Swarm) Command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", s.names[i], name}, args...)...)
}

// Do runs f on a thread of its own in node i's namespace; the sockets f
// opens stay there. The thread is thrown away afterwards.
func (s *Swarm) Do(t testing.TB, i int, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open("/run/netns/"+s.names[i], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err == nil {
			f()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("testenv: enter network namespace %s: %v", s.names[i], err)
	}
}
