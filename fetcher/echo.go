package fetcher

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"
)

// Address verification for CoAP over UDP (RFC 9175 §2.4, item 3).
//
// A GET of a few dozen bytes for a 32 KiB block is answered with a
// thousand-byte part: sent to a forged source address, that makes a CoAP
// server a reflector. So a UDP listener answers a request from an address
// that has not shown it receives our datagrams only with 4.01 Unauthorized
// and an Echo option, no larger than three times the request (or not at
// all); a request that carries an Echo value the listener made for that
// address within echoFresh admits the address, which then gets full
// answers until it has been silent for IdleTimeout.
//
// The Echo value is the time it was made and a keyed MAC of that time and
// the address, so the listener keeps no state for unverified sources: a
// flood of forged requests costs a MAC and a small answer each.

// echoFresh is how long an Echo value admits its address (a client that
// remembers it admits its other sockets with it).
const echoFresh = 5 * time.Minute

// echoLen is the length of an Echo value: 4 octets of time, 8 of MAC.
const echoLen = 12

// echoMaxRatio bounds an answer to an unverified source, in multiples of
// the request's size (RFC 9175 §2.4: "at most three times").
const echoMaxRatio = 3

// echoKey makes and checks Echo values for one listener.
type echoKey [32]byte

func newEchoKey() (echoKey, error) {
	var k echoKey
	_, err := rand.Read(k[:])
	return k, err
}

func (k *echoKey) mac(t uint32, addr netip.Addr) []byte {
	m := hmac.New(sha256.New, k[:])
	var msg [4 + 16]byte
	binary.BigEndian.PutUint32(msg[:4], t)
	a := addr.Unmap().As16()
	copy(msg[4:], a[:])
	m.Write(msg[:])
	return m.Sum(nil)[:echoLen-4]
}

// value returns the Echo value for addr at now.
func (k *echoKey) value(addr netip.Addr, now time.Time) []byte {
	t := uint32(now.Unix())
	v := make([]byte, 4, echoLen)
	binary.BigEndian.PutUint32(v, t)
	return append(v, k.mac(t, addr)...)
}

// valid reports whether v is an Echo value made for addr within echoFresh
// before now (and not after it).
func (k *echoKey) valid(v []byte, addr netip.Addr, now time.Time) bool {
	if len(v) != echoLen {
		return false
	}
	t := binary.BigEndian.Uint32(v[:4])
	age := now.Unix() - int64(t)
	if age < 0 || age > int64(echoFresh/time.Second) {
		return false
	}
	return hmac.Equal(v[4:], k.mac(t, addr))
}
