package fetcher

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"erismount/eris"
)

var httpStatus = map[result]int{
	resOK:               http.StatusOK,
	resCreated:          http.StatusCreated,
	resBadRequest:       http.StatusBadRequest,
	resNotFound:         http.StatusNotFound,
	resMethodNotAllowed: http.StatusMethodNotAllowed,
	resTooLarge:         http.StatusRequestEntityTooLarge,
	resUnavailable:      http.StatusServiceUnavailable,
	resInternal:         http.StatusInternalServerError,
}

// urnPrefix starts the query of an N2R request for a block (RFC 2169).
const urnPrefix = "urn:blake2b:"

// httpHandler serves GET/HEAD <prefix>/uri-res/N2R?urn:blake2b:<REF> and,
// when allowed, PUT/POST of a block to the same URL.
func (s *Server) httpHandler(prefix string) http.Handler {
	path := prefix + n2rPath
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := s.serveHTTP(r, path)
		if rep.res == resOK && r.Method != http.MethodHead {
			rep = s.uploadTurn(r.Context(), rep)
		}
		if rep.res == resOK {
			h := w.Header()
			h.Set("Content-Type", "application/octet-stream")
			h.Set("Content-Length", strconv.Itoa(len(rep.block)))
			// A block never changes: its URL names its hash.
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				n, _ := w.Write(rep.block)
				s.stats.sent.Add(uint64(n))
			}
			return
		}
		if rep.res == resMethodNotAllowed {
			allow := "GET, HEAD"
			if s.opts.AllowPut {
				allow += ", PUT, POST"
			}
			w.Header().Set("Allow", allow)
		}
		if rep.res != resCreated {
			s.log.Debug("http request refused", "status", httpStatus[rep.res], "from", r.RemoteAddr, "why", rep.diag)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(httpStatus[rep.res])
		if rep.diag != "" {
			_, _ = io.WriteString(w, rep.diag+"\n")
		}
	})
}

// uploadTurn waits until the block of rep may be sent under the upload
// cap, at most StoreTimeout; then it is 5.03 / 503.
func (s *Server) uploadTurn(ctx context.Context, rep reply) reply {
	ctx, cancel := s.storeCtx(ctx)
	defer cancel()
	if err := s.upload.wait(ctx, len(rep.block)); err != nil {
		return reply{res: resUnavailable, diag: "over the upload rate limit: no turn in time"}
	}
	return rep
}

func (s *Server) serveHTTP(r *http.Request, path string) reply {
	if r.URL.Path != path {
		return reply{res: resNotFound, diag: "no such resource, blocks are at " + path + "?urn:blake2b:<REF>"}
	}
	q := r.URL.RawQuery
	if len(q) < len(urnPrefix) || !strings.EqualFold(q[:len(urnPrefix)], urnPrefix) {
		return reply{res: resBadRequest, diag: "want the query urn:blake2b:<REF>"}
	}
	ref, err := parseRefQuery(q[len(urnPrefix):], false)
	if err != nil {
		return reply{res: resBadRequest, diag: err.Error()}
	}
	ctx, cancel := s.storeCtx(r.Context())
	defer cancel()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return s.getBlock(ctx, ref)
	case http.MethodPut, http.MethodPost:
		if !s.opts.AllowPut {
			return reply{res: resMethodNotAllowed, diag: "this store is read-only"}
		}
		if r.ContentLength > eris.BlockSize32K {
			return reply{res: resTooLarge, diag: "an ERIS block is at most 32768 bytes"}
		}
		body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, eris.BlockSize32K))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return reply{res: resTooLarge, diag: "an ERIS block is at most 32768 bytes"}
		}
		if err != nil {
			return reply{res: resBadRequest, diag: "cannot read body"}
		}
		return s.putBlock(ctx, ref, body)
	default:
		return reply{res: resMethodNotAllowed, diag: "GET, HEAD, PUT or POST"}
	}
}

type httpListener struct {
	srv    *http.Server
	served chan struct{}
	once   stopOnce
}

func (s *Server) listenHTTP(ep endpoint) (listener, string, error) {
	nl, err := net.Listen("tcp", ep.addr)
	if err != nil {
		return nil, "", err
	}
	l := &httpListener{
		srv: &http.Server{
			Handler:           s.httpHandler(ep.path),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
		served: make(chan struct{}),
	}
	go func() {
		defer close(l.served)
		if err := l.srv.Serve(nl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("http listener ended", "addr", nl.Addr(), "err", err)
		}
	}()
	return l, nl.Addr().String(), nil
}

func (l *httpListener) stop() {
	l.once.do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.srv.Shutdown(ctx); err != nil {
			_ = l.srv.Close()
		}
		<-l.served
	})
}
