package fetcher

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// aimdWindow bounds the CoAP/UDP requests in flight to one peer, like
// TCP's congestion window (RFC 5681) counted in requests: it starts at
// aimdInitial, grows by one per answer up to the threshold (slow start)
// and by 1/cwnd per answer above it, and halves, with the threshold, when
// a request has to be retransmitted, at most once per window's worth of
// requests (a loss of a request sent before the last cut does not cut
// again). RFC 7252 §4.7 leaves NSTART and congestion control to such an
// "appropriate" mechanism when it is more than 1.
type aimdWindow struct {
	cwnd, ssthresh float64
	max            float64
	inflight       int
	seq            uint64 // requests sent (first transmissions)
	cutSeq         uint64 // seq at the last cut
	cuts, grows    uint64
	low, high      float64 // the smallest and largest cwnd since resetRange
}

const (
	aimdInitial = 32
	aimdMin     = 1
)

func newAIMDWindow(max int) aimdWindow {
	w := aimdWindow{cwnd: min(aimdInitial, float64(max)), ssthresh: float64(max), max: float64(max)}
	w.resetRange()
	return w
}

// room reports whether one more request may be sent.
func (w *aimdWindow) room() bool { return float64(w.inflight) < w.cwnd }

// sent counts a request put in flight and returns its sequence number.
func (w *aimdWindow) sent() uint64 {
	w.inflight++
	w.seq++
	return w.seq
}

// release takes a request out of flight (answered, given up, cancelled).
func (w *aimdWindow) release() { w.inflight-- }

// success grows the window for an answer.
func (w *aimdWindow) success() {
	if w.cwnd < w.ssthresh {
		w.cwnd++
	} else {
		w.cwnd += 1 / w.cwnd
	}
	w.cwnd = min(w.cwnd, w.max)
	w.grows++
	w.high = max(w.high, w.cwnd)
}

// loss shrinks the window for a retransmission of the request sent as
// seq, unless the window was cut after that request was sent.
func (w *aimdWindow) loss(seq uint64) {
	if seq <= w.cutSeq {
		return
	}
	w.cwnd = max(w.cwnd/2, aimdMin)
	w.ssthresh = w.cwnd
	w.cutSeq = w.seq
	w.cuts++
	w.low = min(w.low, w.cwnd)
}

// resetRange starts a new record of the window's extremes.
func (w *aimdWindow) resetRange() { w.low, w.high = w.cwnd, w.cwnd }

type ipv4Message = ipv4.Message

// newBatchConn reads and writes c in batches (recvmmsg, sendmmsg where
// the system has them).
func newBatchConn(c *net.UDPConn, ra *net.UDPAddr) batchConn {
	if ra.IP.To4() != nil {
		return ipv4.NewPacketConn(c)
	}
	return ipv6.NewPacketConn(c)
}
