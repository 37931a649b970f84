package eris

import (
	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/chacha20"
)

// nonce returns the ChaCha20 nonce for a block of the given tree level:
// the level in byte 0, zeros elsewhere (spec §2.3; leaves are level 0).
func nonce(level int) [chacha20.NonceSize]byte {
	var n [chacha20.NonceSize]byte
	n[0] = byte(level)
	return n
}

// xorBlock encrypts or decrypts src into dst (which may be the same slice)
// with key at the nonce of level.
func xorBlock(dst, src []byte, key *Key, level int) {
	n := nonce(level)
	c, err := chacha20.NewUnauthenticatedCipher(key[:], n[:])
	if err != nil {
		panic(err) // key and nonce sizes are fixed by their types
	}
	c.XORKeyStream(dst, src)
}

// sealNode encrypts an internal node in place and returns its pair. The key
// of an internal node is its unkeyed hash (spec §2.3, no convergence secret
// above the leaves).
func sealNode(node []byte, level int) (Ref, Key) {
	key := Key(blake2b.Sum256(node))
	xorBlock(node, node, &key, level)
	return RefOf(node), key
}
