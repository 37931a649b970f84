package fetcher

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"erismount/eris"
)

// result is the outcome of serving one request, before a transport maps
// it to a CoAP code or an HTTP status.
type result int

const (
	resOK               result = iota // 2.05 Content / 200
	resCreated                        // 2.01 Created / 201
	resBadRequest                     // 4.00 / 400
	resNotFound                       // 4.04 / 404
	resMethodNotAllowed               // 4.05 / 405
	resTooLarge                       // 4.13 / 413
	resUnavailable                    // 5.03 / 503: the store timed out or the server is closing
	resInternal                       // 5.00 / 500
)

// reply is what a request gets: a result, the block for a GET, and a
// diagnostic text for errors (CoAP diagnostic payload, HTTP body).
type reply struct {
	res   result
	block []byte
	diag  string
}

// getBlock serves a GET. The store's bytes are served as they are: the
// reader verifies every block, and a store that verifies on read (SQLite)
// never returns corrupt data.
func (s *Server) getBlock(ctx context.Context, ref eris.Ref) reply {
	s.stats.gets.Add(1)
	b, err := s.store.GetBlock(ctx, ref)
	switch {
	case err == nil:
		s.stats.blocks.Add(1)
		s.stats.bytes.Add(uint64(len(b)))
		return reply{res: resOK, block: b}
	case errors.Is(err, eris.ErrNotFound):
		s.stats.notFound.Add(1)
		return reply{res: resNotFound, diag: "block not found"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.stats.errors.Add(1)
		return reply{res: resUnavailable, diag: "store did not answer in time"}
	default:
		s.stats.errors.Add(1)
		return reply{res: resInternal, diag: "store error"}
	}
}

// putBlock serves a PUT or POST: the body must be an ERIS block (1 KiB or
// 32 KiB) whose Blake2b-256 hash is ref; only then is it stored.
func (s *Server) putBlock(ctx context.Context, ref eris.Ref, body []byte) reply {
	s.stats.puts.Add(1)
	if len(body) > eris.BlockSize32K {
		s.stats.rejected.Add(1)
		return reply{res: resTooLarge, diag: fmt.Sprintf("body of %d bytes, an ERIS block is at most %d", len(body), eris.BlockSize32K)}
	}
	if !eris.ValidBlockSize(len(body)) {
		s.stats.rejected.Add(1)
		return reply{res: resBadRequest, diag: fmt.Sprintf("body of %d bytes, an ERIS block is 1024 or 32768 bytes", len(body))}
	}
	if eris.RefOf(body) != ref {
		s.stats.rejected.Add(1)
		return reply{res: resBadRequest, diag: "Blake2b-256 of the body does not match the reference"}
	}
	if err := s.store.PutBlock(ctx, ref, body); err != nil {
		s.stats.errors.Add(1)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return reply{res: resUnavailable, diag: "store did not answer in time"}
		}
		return reply{res: resInternal, diag: "store error"}
	}
	s.stats.stored.Add(1)
	return reply{res: resCreated}
}

// parseRefQuery reads a reference from a request query: the 52-character
// base32 form (upper or lower case) or, for CoAP, the 32 raw octets.
func parseRefQuery(q string, rawAllowed bool) (eris.Ref, error) {
	if rawAllowed && len(q) == len(eris.Ref{}) {
		return eris.RefFromBytes([]byte(q))
	}
	if len(q) != eris.RefLen {
		return eris.Ref{}, fmt.Errorf("query of %d bytes: want the 52-character base32 reference", len(q))
	}
	return eris.ParseRef(strings.ToUpper(q))
}
