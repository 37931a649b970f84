package fetcher

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"unsafe"
)

// UDP generic segmentation and receive offload (Linux 4.18 and 5.0): a
// train of datagrams of one size to one address is sent as one (GSO,
// UDP_SEGMENT), and the kernel may hand a socket that asked for it
// (UDP_GRO) such a train as one buffer with the segment size in a control
// message. On the wire they remain separate datagrams.
const (
	solUDP     = 17  // SOL_UDP
	udpSegment = 103 // UDP_SEGMENT
	udpGRO     = 104 // UDP_GRO
)

// enableGRO asks the kernel to coalesce received datagrams on c.
func enableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), solUDP, udpGRO, 1)
	}); err != nil {
		return false
	}
	return serr == nil
}

// gsoOOB returns the control message that sends a buffer as datagrams of
// size bytes each (the last may be shorter).
func gsoOOB(size int) []byte {
	oob := make([]byte, syscall.CmsgSpace(2))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = solUDP, udpSegment
	h.SetLen(syscall.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[syscall.CmsgLen(0):], uint16(size))
	return oob
}

// groSize returns the segment size of a coalesced buffer from its control
// messages, 0 if it is one datagram.
func groSize(oob []byte) int {
	for len(oob) >= syscall.CmsgLen(0) {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < syscall.CmsgLen(0) || l > len(oob) {
			return 0
		}
		data := oob[syscall.CmsgLen(0):l]
		if h.Level == solUDP && h.Type == udpGRO {
			switch len(data) {
			case 2:
				return int(binary.NativeEndian.Uint16(data))
			case 4:
				return int(binary.NativeEndian.Uint32(data))
			}
			return 0
		}
		oob = oob[min(syscall.CmsgSpace(l-syscall.CmsgLen(0)), len(oob)):]
	}
	return 0
}

const gsoSupported = true

// gsoError reports whether a send with UDP_SEGMENT failed because the
// kernel or the device cannot segment (no checksum offload: EIO), rather
// than for a reason any send may fail for.
func gsoError(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOPROTOOPT)
}
