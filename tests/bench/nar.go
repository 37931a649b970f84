package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"erismount/narinfo/nar"
)

// The whole-nar baseline is what a substitute costs today: fetch the nar
// of the store item over HTTP, check its NarHash, and unpack it on disk
// before anything in it can be used.

// WriteNar serializes the tree at dir into the file path and returns the
// nar's hash and size.
func WriteNar(ctx context.Context, dir, path string) (nar.Sum, error) {
	f, err := os.Create(path)
	if err != nil {
		return nar.Sum{}, err
	}
	hw := nar.NewHashingWriter(f)
	err = nar.WriteFS(ctx, hw, nar.DirFS(dir))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return hw.Sum(), err
}

// NarServer serves one nar file over HTTP on loopback.
type NarServer struct {
	URL string // of the nar, on the server's own address
	srv *http.Server
}

// ServeNar serves the file at path as /<base name> on 127.0.0.1.
func ServeNar(path string) (*NarServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	name := "/" + filepath.Base(path)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+name, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-nix-archive")
		http.ServeFile(w, r, path)
	})
	s := &NarServer{URL: "http://" + ln.Addr().String() + name, srv: &http.Server{Handler: mux}}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *NarServer) Close() error { return s.srv.Close() }

// errNarHash means the fetched nar is not the one expected.
var errNarHash = errors.New("nar hash mismatch")

// FetchUnpack downloads the nar at url with client, unpacks it into dest
// (which must not exist) as it arrives, and checks it against want once
// it has all arrived. It returns the bytes fetched.
func FetchUnpack(ctx context.Context, client *http.Client, url string, want nar.Sum, dest string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	hw := nar.NewHashingWriter(nil)
	if err := Unpack(nar.NewReader(io.TeeReader(resp.Body, hw)), dest); err != nil {
		return hw.Sum().Size, err
	}
	if got := hw.Sum(); got != want {
		return got.Size, fmt.Errorf("%w: got %v, want %v", errNarHash, got, want)
	}
	return hw.Sum().Size, nil
}

// Unpack writes the nodes of r under dest, as guix-daemon restores a
// substitute: files read-only, executables 0555, symlinks as they are.
// Directories stay writable so that the benchmark can remove them.
func Unpack(r *nar.Reader, dest string) error {
	for {
		h, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dest, filepath.FromSlash(h.Path))
		switch h.Type {
		case nar.Directory:
			err = os.Mkdir(p, 0o755)
		case nar.Symlink:
			err = os.Symlink(h.LinkTarget, p)
		case nar.Regular, nar.Executable:
			mode := os.FileMode(0o444)
			if h.Type == nar.Executable {
				mode = 0o555
			}
			err = writeFile(p, r, mode)
		}
		if err != nil {
			return fmt.Errorf("unpack %q: %w", h.Path, err)
		}
	}
}

// writeFile creates the file p (which must not exist) with the rest of r.
func writeFile(p string, r io.Reader, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
