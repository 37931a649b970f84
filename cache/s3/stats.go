package s3

import (
	"net/http"
	"sync/atomic"
)

// Stats are counters since Open: the requests sent to the service (each
// retry counted, as the service bills it) and what the block operations
// did.
type Stats struct {
	// Requests by HTTP method, as sent.
	GETs, PUTs, HEADs, Other int64
	// BytesSent and BytesReceived are request and response bodies.
	BytesSent, BytesReceived int64

	Gets     int64 // GetBlock calls
	Blocks   int64 // of which returned a verified block
	Bytes    int64 // their bytes
	NotFound int64 // of which found no object
	Corrupt  int64 // of which found an object that is not the block
	Puts     int64 // PutBlock calls
	Uploaded int64 // of which sent the block
	// UploadedBytes are the bytes of the blocks sent.
	UploadedBytes int64
	Present       int64 // of which found the block there already
	Rejected      int64 // of which refused the block (size or hash)
	Errors        int64 // failed calls (transport, service, access)
}

// Requests is the number of requests of every method.
func (st Stats) Requests() int64 { return st.GETs + st.PUTs + st.HEADs + st.Other }

type counters struct {
	gets, puts, heads, other atomic.Int64
	sent, received           atomic.Int64

	getCalls, blocks, bytes, notFound, corrupt atomic.Int64
	putCalls, uploaded, uploadedBytes          atomic.Int64
	present, rejected, errors                  atomic.Int64
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	c := s.counts
	return Stats{
		GETs: c.gets.Load(), PUTs: c.puts.Load(), HEADs: c.heads.Load(), Other: c.other.Load(),
		BytesSent: c.sent.Load(), BytesReceived: c.received.Load(),
		Gets: c.getCalls.Load(), Blocks: c.blocks.Load(), Bytes: c.bytes.Load(),
		NotFound: c.notFound.Load(), Corrupt: c.corrupt.Load(),
		Puts: c.putCalls.Load(), Uploaded: c.uploaded.Load(), UploadedBytes: c.uploadedBytes.Load(),
		Present: c.present.Load(), Rejected: c.rejected.Load(), Errors: c.errors.Load(),
	}
}

// countingTransport counts requests by method and body bytes both ways.
type countingTransport struct {
	base http.RoundTripper
	c    *counters
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodGet:
		t.c.gets.Add(1)
	case http.MethodPut:
		t.c.puts.Add(1)
	case http.MethodHead:
		t.c.heads.Add(1)
	default:
		t.c.other.Add(1)
	}
	if req.ContentLength > 0 {
		t.c.sent.Add(req.ContentLength)
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.ContentLength > 0 {
		t.c.received.Add(resp.ContentLength)
	}
	return resp, err
}
