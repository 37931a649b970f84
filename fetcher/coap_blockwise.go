package fetcher

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"erismount/eris"
)

// Block-wise transfer on the server (RFC 7959; BERT on streams, RFC 8323
// §6) is done by the block handler, not by go-coap's block-wise layer.
// go-coap keeps every response it sends in blocks (and every 1 KiB
// response) in a per-connection cache until a timer expires, and answers a
// retransmitted first request of a transfer whose entry exists with 4.08.
// ERIS blocks never change, so Block2 needs no state at all: each request
// names the slice it wants, and a small LRU of recently served blocks
// saves the store 31 of the 32 reads of a 32 KiB block. Block1 (uploads)
// needs a little state, kept bounded in uploads.

// block2Slice is the part of a representation of n bytes to send for a
// GET. opt is the request's Block2 option, if any; udp limits blocks to
// 1 KiB and rules out BERT. blockwise reports whether to answer with a
// Block2 option (num, szx, more).
type block2Slice struct {
	off, end  int
	blockwise bool
	szx       blockwise.SZX
	num       int64
	more      bool
}

func sliceBlock2(n int, opt uint32, hasOpt, udp bool) (block2Slice, error) {
	if !hasOpt {
		if !udp || n <= eris.BlockSize1K {
			return block2Slice{end: n}, nil
		}
		return block2Slice{end: eris.BlockSize1K, blockwise: true, szx: blockwise.SZX1024, more: true}, nil
	}
	szx, num, _, err := blockwise.DecodeBlockOption(opt)
	if err != nil {
		return block2Slice{}, err
	}
	if szx == blockwise.SZXBERT && udp {
		return block2Slice{}, fmt.Errorf("BERT (szx 7) is for CoAP over TCP only")
	}
	off := num * blockSize(szx)
	if off >= int64(max(n, 1)) {
		return block2Slice{}, fmt.Errorf("block %d of size %d is beyond the %d bytes", num, blockSize(szx), n)
	}
	end := int64(n) // BERT: all the rest, a multiple of 1 KiB
	if szx < blockwise.SZXBERT {
		end = min(off+blockSize(szx), int64(n))
	}
	return block2Slice{off: int(off), end: int(end), blockwise: true, szx: szx, num: num, more: end < int64(n)}, nil
}

// placeBlock2 checks a Block2 part of a transfer of parts of bs bytes
// (szx) and copies its payload into body at num*bs: the option must name
// part num of that size, every part before the last must be full, and the
// parts must fit the announced total (-1 if unknown), the capacity of
// body and 32 KiB. It returns body, longer if the part extends it, and
// whether the option says more parts follow.
func placeBlock2(body []byte, wantSZX blockwise.SZX, bs, num, total int64, opt uint32, payload []byte) ([]byte, bool, error) {
	szx, n, more, err := blockwise.DecodeBlockOption(opt)
	if err != nil {
		return body, false, err
	}
	plen := int64(len(payload))
	off := num * bs
	switch {
	case szx != wantSZX:
		return body, false, fmt.Errorf("peer changed block size from %d to %d", bs, blockSize(szx))
	case n != num:
		return body, false, fmt.Errorf("peer sent block %d at offset %d", n, off)
	case more && (plen == 0 || plen%bs != 0):
		return body, false, fmt.Errorf("peer sent a partial block of %d bytes before the last", plen)
	case off+plen > eris.BlockSize32K:
		return body, false, fmt.Errorf("%w: peer sends more than %d bytes", eris.ErrCorrupt, eris.BlockSize32K)
	case total >= 0 && (off+plen > total || more != (off+plen < total)),
		off+plen > int64(cap(body)):
		return body, false, fmt.Errorf("block %d of %d bytes does not fit the announced %d", n, plen, total)
	}
	if int64(len(body)) < off+plen {
		body = body[:off+plen]
	}
	copy(body[off:off+plen], payload)
	return body, more, nil
}

// uploads reassembles Block1 uploads, at most maxUploads at once, each
// forgotten uploadTTL after its last block.
type uploads struct {
	mu sync.Mutex
	m  map[string]*upload
}

const (
	maxUploads = 256
	uploadTTL  = 10 * time.Second
)

type upload struct {
	buf  []byte
	seen time.Time
	// done is set once the last block was handled; a retransmission of
	// that block gets the same answer instead of 4.08.
	done    bool
	doneRep reply
	lastOff int
	lastLen int
}

// errIncomplete means a Block1 block does not continue the upload (4.08).
var errIncomplete = fmt.Errorf("block does not continue the upload")

// add records one Block1 block at off. It returns the whole body when
// the last block arrives (complete), or a previous answer for a repeated
// last block (again).
func (u *uploads) add(key string, off int, part []byte, more bool, now time.Time) (body []byte, complete bool, again *reply, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = make(map[string]*upload)
	}
	up := u.m[key]
	if up != nil && now.Sub(up.seen) > uploadTTL {
		delete(u.m, key)
		up = nil
	}
	if off == 0 && (up == nil || up.done || len(up.buf) > len(part)) {
		if up == nil && len(u.m) >= maxUploads {
			u.expire(now)
		}
		if up == nil && len(u.m) >= maxUploads {
			// Finished uploads are kept only to answer a retransmitted
			// last block: they give way to new ones (a publisher sends
			// blocks faster than uploadTTL frees their slots).
			for k, old := range u.m {
				if old.done {
					delete(u.m, k)
				}
			}
		}
		if up == nil && len(u.m) >= maxUploads {
			return nil, false, nil, errBusy
		}
		up = &upload{buf: make([]byte, 0, eris.BlockSize32K)}
		u.m[key] = up
	}
	if up == nil {
		return nil, false, nil, errIncomplete
	}
	up.seen = now
	if off == up.lastOff && len(part) == up.lastLen && off+len(part) == len(up.buf) && bytes.Equal(up.buf[off:], part) {
		// A retransmission of the block just handled.
		if up.done {
			rep := up.doneRep
			return nil, false, &rep, nil
		}
		return nil, false, nil, nil
	}
	if up.done || off != len(up.buf) {
		return nil, false, nil, errIncomplete
	}
	if off+len(part) > eris.BlockSize32K {
		delete(u.m, key)
		return nil, false, nil, errUploadTooLarge
	}
	up.buf = append(up.buf, part...)
	up.lastOff, up.lastLen = off, len(part)
	if more {
		return nil, false, nil, nil
	}
	up.done = true
	return up.buf, true, nil, nil
}

// finish remembers the answer to a completed upload, for retransmissions.
func (u *uploads) finish(key string, rep reply) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if up := u.m[key]; up != nil && up.done {
		up.doneRep = rep
	}
}

func (u *uploads) expire(now time.Time) {
	for k, up := range u.m {
		if now.Sub(up.seen) > uploadTTL {
			delete(u.m, k)
		}
	}
}

var (
	errBusy           = fmt.Errorf("too many uploads in progress")
	errUploadTooLarge = fmt.Errorf("an ERIS block is at most %d bytes", eris.BlockSize32K)
)
