package fetcher

import (
	"errors"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	cases := []struct {
		in        string
		tr        transport
		addr      string
		path      string
		canonical string
	}{
		{"coap://127.0.0.1", transportUDP, "127.0.0.1:5683", "/.well-known/eris", "coap://127.0.0.1:5683/.well-known/eris"},
		{"coap://peer.example:6000/stores/a/", transportUDP, "peer.example:6000", "/stores/a", "coap://peer.example:6000/stores/a"},
		{"COAP+TCP://[::1]:5684", transportTCP, "[::1]:5684", "/.well-known/eris", "coap+tcp://[::1]:5684/.well-known/eris"},
		{"coap+unix:///run/kapla.sock", transportUnix, "/run/kapla.sock", "/.well-known/eris", "coap+unix:///run/kapla.sock"},
		{"http://127.0.0.1:8080", transportHTTP, "127.0.0.1:8080", "", "http://127.0.0.1:8080"},
		{"https://cache.example/eris/", transportHTTP, "cache.example:443", "/eris", "https://cache.example:443/eris"},
		{"http://cache.example", transportHTTP, "cache.example:80", "", "http://cache.example:80"},
		{"https://cdn.example/blocks/?layout=static", transportHTTP, "cdn.example:443", "/blocks", "https://cdn.example:443/blocks?layout=static"},
	}
	for _, c := range cases {
		ep, err := parseEndpoint(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if ep.transport != c.tr || ep.addr != c.addr || ep.path != c.path || ep.String() != c.canonical {
			t.Errorf("%s: got %v %q %q %q", c.in, ep.transport, ep.addr, ep.path, ep.String())
		}
	}
	for _, bad := range []string{
		"", "127.0.0.1:5683", "ftp://x", "coap://", "coap://user@host", "coap://host?x=1",
		"coap://host#frag", "coap+unix://host/sock", "coap+unix://", "coap+unix:rel.sock", "http://:80",
		"coap://::", "coap://::1", "coap://[zz]:1", "coap://h:70000",
		"http://h/?layout=n2r", "http://h/?layout=static&x=1", "coap://h/?layout=static", // the first found by FuzzParseEndpoint
	} {
		if _, err := parseEndpoint(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: got %v, want ErrBadURL", bad, err)
		}
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"coap://127.0.0.1:5683", "coap+unix:///a.sock", "http://h/p/", "coap+tcp://[::1]/x", "%zz", "http://h/b?layout=static"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := parseEndpoint(s)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("%q: error %v is not ErrBadURL", s, err)
			}
			return
		}
		// The canonical form parses to the same endpoint.
		again, err := parseEndpoint(ep.String())
		if err != nil || again != ep {
			t.Fatalf("%q: canonical %q parses to %+v, %v; want %+v", s, ep.String(), again, err, ep)
		}
	})
}
