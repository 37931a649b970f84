package fetcher

import (
	"errors"
	"fmt"
	"strings"

	"erismount/eris"
)

var (
	// ErrBadURL means a peer or listen URL could not be used.
	ErrBadURL = errors.New("fetcher: bad URL")
	// ErrClosed means the peer, pool or server was closed.
	ErrClosed = errors.New("fetcher: closed")
	// ErrNoPeers means no peer could be asked: the pool is empty or every
	// peer is backing off after failures.
	ErrNoPeers = errors.New("fetcher: no live peer")
	// ErrUnavailable means no peer delivered a block although some might
	// hold it: every attempt failed (refused, timed out, closed) or the
	// peers were backing off. It wraps the attempts' errors.
	ErrUnavailable = errors.New("block unavailable")
)

// unavailableError is ErrUnavailable for one block, with what happened.
type unavailableError struct {
	ref            eris.Ref
	notFound, dead int
	errs           []error // the failed attempts
}

func (e *unavailableError) Error() string {
	// The same failure from every attempt is said once, with its count.
	var msgs []string
	count := map[string]int{}
	for _, err := range e.errs {
		m := err.Error()
		if count[m] == 0 {
			msgs = append(msgs, m)
		}
		count[m]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "get block %s: %v: %d attempts failed", e.ref.Str(), ErrUnavailable, len(e.errs))
	if e.notFound > 0 {
		fmt.Fprintf(&b, ", %d peers do not have it", e.notFound)
	}
	if e.dead > 0 {
		fmt.Fprintf(&b, ", %d peers skipped while they back off", e.dead)
	}
	for _, m := range msgs {
		b.WriteString("; ")
		b.WriteString(m)
		if n := count[m]; n > 1 {
			fmt.Fprintf(&b, " (%d times)", n)
		}
	}
	return b.String()
}

func (e *unavailableError) Unwrap() []error { return append([]error{ErrUnavailable}, e.errs...) }

// PeerError is a failure of one request to one peer. It names the peer URL,
// the operation and the block, and wraps the cause: eris.ErrNotFound for a
// missing block, eris.ErrCorrupt for a block that failed verification, or a
// transport error (timeout, refused connection, unexpected response code).
type PeerError struct {
	Peer string // URL of the peer
	Op   string // "get" or "put"
	Ref  eris.Ref
	Err  error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("%s block %s at %s: %v", e.Op, e.Ref.Str(), e.Peer, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// StatusError is an unexpected response from a peer: a CoAP response code
// ("4.00") or HTTP status ("500 Internal Server Error") and the diagnostic
// text the peer sent, if any.
type StatusError struct {
	Code       string
	Diagnostic string
}

func (e *StatusError) Error() string {
	if e.Diagnostic == "" {
		return "peer answered " + e.Code
	}
	return fmt.Sprintf("peer answered %s: %s", e.Code, e.Diagnostic)
}

func peerErr(peer, op string, ref eris.Ref, err error) error {
	return &PeerError{Peer: peer, Op: op, Ref: ref, Err: err}
}
