package narinfo

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"erismount/narinfo/sexp"
)

// Outcome is the verdict on a Guix signature, in the terms Guix uses
// (spec §1.4: `signature-case` in guix/pki.scm, plus "unsigned").
type Outcome int

const (
	// Unsigned: no Signature field, or one that does not parse (wrong
	// format, unsupported version, bad base64, not an s-expression).
	Unsigned Outcome = iota
	// CorruptSignature: the signature lacks its data or public key.
	CorruptSignature
	// UnauthorizedKey: the signing key is not in the ACL.
	UnauthorizedKey
	// HashMismatch: the signature is over other bytes.
	HashMismatch
	// InvalidSignature: the cryptographic check failed.
	InvalidSignature
	// Valid: an authorized key signed exactly these bytes.
	Valid
)

func (o Outcome) String() string {
	switch o {
	case Unsigned:
		return "unsigned"
	case CorruptSignature:
		return "corrupt signature"
	case UnauthorizedKey:
		return "unauthorized key"
	case HashMismatch:
		return "hash mismatch"
	case InvalidSignature:
		return "invalid signature"
	case Valid:
		return "valid"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// ErrNotValid is matched by the error Verify returns with every outcome
// but Valid.
var ErrNotValid = errors.New("signature not valid")

// VerifyError says why a signature is not valid.
type VerifyError struct {
	Outcome Outcome
	Reason  string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("narinfo: %s: %s", e.Outcome, e.Reason)
}

// Is makes a VerifyError match ErrNotValid.
func (e *VerifyError) Is(target error) bool { return target == ErrNotValid }

func verdict(o Outcome, format string, args ...any) (Outcome, error) {
	return o, &VerifyError{Outcome: o, Reason: fmt.Sprintf(format, args...)}
}

// Verify checks the narinfo's Guix signature against acl, over the bytes
// before its `Signature:` marker, and returns the outcome Guix would
// reach; the error (a *VerifyError) explains any outcome but Valid.
func (n *Narinfo) Verify(acl *ACL) (Outcome, error) {
	signed, ok := n.SignedPart()
	if !ok || n.Signature == "" {
		return verdict(Unsigned, "no Signature field")
	}
	sig, err := ParseSignatureField(n.Signature)
	if err != nil {
		return verdict(Unsigned, "%v", err)
	}
	return CheckSignature(sig, signed, acl)
}

// ParseSignatureField parses the value of a Signature field,
// "1;<host>;<base64 of the signature s-expression>". The host is ignored,
// as by Guix.
func ParseSignatureField(v string) (sexp.Value, error) {
	parts := strings.Split(v, ";")
	if len(parts) != 3 {
		return sexp.Value{}, fmt.Errorf("signature field has %d ';'-separated parts, want 3", len(parts))
	}
	if parts[0] != "1" {
		return sexp.Value{}, fmt.Errorf("unsupported signature version %q", trim(parts[0]))
	}
	text, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return sexp.Value{}, fmt.Errorf("signature is not base64: %v", err)
	}
	sig, err := sexp.Parse(text)
	if err != nil {
		return sexp.Value{}, fmt.Errorf("signature is not a valid s-expression: %v", err)
	}
	return sig, nil
}

// CheckSignature checks a Guix signature s-expression over signed, in
// Guix's order: data and key present (else CorruptSignature), key in acl
// (else UnauthorizedKey), the hash value inside equal to SHA-256 of signed
// (else HashMismatch), the ECDSA check (else InvalidSignature).
func CheckSignature(sig sexp.Value, signed []byte, acl *ACL) (Outcome, error) {
	data, okData := sig.Find("data")
	key, okKey := sig.Find("public-key")
	if !okData || !okKey {
		return verdict(CorruptSignature, "signature has no data or no public key")
	}
	if !acl.authorizes(key) {
		return verdict(UnauthorizedKey, "signed with a key not in the ACL: %s", shortKey(key))
	}
	digest := sha256.Sum256(signed)
	h, ok := data.Find("hash")
	if !ok || !bytes.Equal(h.Nth(2).Bytes(), digest[:]) {
		return verdict(HashMismatch, "the signature is over other bytes (signed part has SHA-256 %X)", digest)
	}
	if algo := h.Nth(1).String(); algo != "sha256" {
		return verdict(InvalidSignature, "hash algorithm %q", trim(algo))
	}
	pub, err := publicKeyFromSexp(key)
	if err != nil {
		return verdict(InvalidSignature, "%v", err)
	}
	r, s, err := ecdsaSigVal(sig)
	if err != nil {
		return verdict(InvalidSignature, "%v", err)
	}
	if !verifyECDSA(pub.q[:], digest[:], r, s) {
		return verdict(InvalidSignature, "ECDSA verification failed")
	}
	return Valid, nil
}

// ecdsaSigVal extracts r and s from (sig-val (ecdsa (r …) (s …))).
func ecdsaSigVal(sig sexp.Value) (r, s *big.Int, err error) {
	sv, ok := sig.Find("sig-val")
	if !ok || sv.Nth(1).Head() != "ecdsa" {
		return nil, nil, errors.New("no (sig-val (ecdsa …))")
	}
	get := func(name string) (*big.Int, error) {
		p, ok := sv.Nth(1).Find(name)
		if !ok || p.Len() != 2 || p.Nth(1).IsList() || len(p.Nth(1).Bytes()) > 64 {
			return nil, fmt.Errorf("sig-val has no usable %s", name)
		}
		return new(big.Int).SetBytes(p.Nth(1).Bytes()), nil
	}
	if r, err = get("r"); err != nil {
		return nil, nil, err
	}
	if s, err = get("s"); err != nil {
		return nil, nil, err
	}
	return r, s, nil
}

func shortKey(key sexp.Value) string {
	if q, ok := key.Find("q"); ok && len(q.Nth(1).Bytes()) == 32 {
		return fmt.Sprintf("%X", q.Nth(1).Bytes())
	}
	return trim(string(key.Canonical()))
}

// SignatureField returns the value of a Signature field signing signed
// with k: "1;<host>;<base64 of the advanced-format signature>".
func (k *PrivateKey) SignatureField(signed []byte, host string) string {
	sig := k.SignDigest(sha256.Sum256(signed))
	return "1;" + host + ";" + base64.StdEncoding.EncodeToString(sig.Advanced())
}

// ExitCode makes a command exit with 4 (verification failed).
func (e *VerifyError) ExitCode() int { return 4 }
