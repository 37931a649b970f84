package narinfo

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Nix signs narinfos differently from Guix (spec §5): a `Sig:
// <key name>:<base64>` field holding a plain Ed25519 signature over the
// fingerprint `1;<store path>;<NarHash>;<NarSize>;<references>`, where the
// references are full store paths, sorted and comma-separated. The narinfo
// text itself is not signed, so field order does not matter to Nix.

// ErrNixSig is matched by errors about Nix keys and signatures.
var ErrNixSig = errors.New("bad Nix signature")

// NixPublicKey is a Nix binary-cache public key, `name:base64` as in
// trusted-public-keys.
type NixPublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// NixPrivateKey is a Nix binary-cache secret key, `name:base64` as
// `nix-store --generate-binary-cache-key` writes it.
type NixPrivateKey struct {
	Name string
	Key  ed25519.PrivateKey
}

func splitNixKey(s string, size int, what string) (string, []byte, error) {
	s = strings.TrimSpace(s)
	name, b64, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return "", nil, fmt.Errorf("narinfo: %w: %s is not name:base64", ErrNixSig, what)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != size {
		return "", nil, fmt.Errorf("narinfo: %w: %s %q: want base64 of %d bytes", ErrNixSig, what, name, size)
	}
	return name, b, nil
}

// ParseNixPublicKey parses `name:base64(32 bytes)`; surrounding blanks
// are ignored.
func ParseNixPublicKey(s string) (NixPublicKey, error) {
	name, b, err := splitNixKey(s, ed25519.PublicKeySize, "public key")
	if err != nil {
		return NixPublicKey{}, err
	}
	return NixPublicKey{Name: name, Key: b}, nil
}

// ParseNixPrivateKey parses `name:base64(64 bytes)`, checking that the
// public half stored in it matches the seed.
func ParseNixPrivateKey(s string) (NixPrivateKey, error) {
	name, b, err := splitNixKey(s, ed25519.PrivateKeySize, "secret key")
	if err != nil {
		return NixPrivateKey{}, err
	}
	k := ed25519.PrivateKey(b)
	if !ed25519.NewKeyFromSeed(k.Seed()).Equal(k) {
		return NixPrivateKey{}, fmt.Errorf("narinfo: %w: secret key %q: public half does not match", ErrNixSig, name)
	}
	return NixPrivateKey{Name: name, Key: k}, nil
}

// GenerateNixKey makes a key pair like nix-store
// --generate-binary-cache-key. random nil means crypto/rand.
func GenerateNixKey(name string, random io.Reader) (NixPrivateKey, error) {
	if name == "" || strings.ContainsAny(name, ": \t\n") {
		return NixPrivateKey{}, fmt.Errorf("narinfo: %w: key name %q", ErrNixSig, name)
	}
	if random == nil {
		random = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(random)
	if err != nil {
		return NixPrivateKey{}, fmt.Errorf("narinfo: generate Nix key: %w", err)
	}
	return NixPrivateKey{Name: name, Key: priv}, nil
}

// Public returns the public half.
func (k NixPrivateKey) Public() NixPublicKey {
	return NixPublicKey{Name: k.Name, Key: k.Key.Public().(ed25519.PublicKey)}
}

// String returns the key file contents (no newline, as Nix writes it).
func (k NixPrivateKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
}

// String returns the key as trusted-public-keys lists it.
func (k NixPublicKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
}

// NixFingerprint returns what Nix signs for this narinfo.
func (n *Narinfo) NixFingerprint() (string, error) {
	dir, _, err := SplitStorePath(n.StorePath)
	if err != nil {
		return "", err
	}
	if n.NarSize <= 0 || n.NarHash.IsZero() {
		return "", fmt.Errorf("narinfo: %w: no NarHash/NarSize to sign", ErrNixSig)
	}
	refs := make([]string, len(n.References))
	for i, r := range n.References {
		refs[i] = dir + "/" + r
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	return "1;" + n.StorePath + ";" + n.NarHash.String() + ";" + strconv.FormatInt(n.NarSize, 10) + ";" + strings.Join(refs, ","), nil
}

// SignNix adds (or replaces) the Sig field of key k.
func (n *Narinfo) SignNix(k NixPrivateKey) error {
	fp, err := n.NixFingerprint()
	if err != nil {
		return err
	}
	sig := k.Name + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(k.Key, []byte(fp)))
	n.Sigs = slices.DeleteFunc(n.Sigs, func(s string) bool { return strings.HasPrefix(s, k.Name+":") })
	n.Sigs = append(n.Sigs, sig)
	return nil
}

// VerifyNix returns the name of the first trusted key with a valid Sig,
// or an error matching ErrNixSig if there is none, as Nix requires one
// valid signature from a trusted key.
func (n *Narinfo) VerifyNix(trusted []NixPublicKey) (string, error) {
	fp, err := n.NixFingerprint()
	if err != nil {
		return "", err
	}
	for _, s := range n.Sigs {
		name, b64, ok := strings.Cut(s, ":")
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(sig) != ed25519.SignatureSize {
			continue
		}
		for _, k := range trusted {
			if k.Name == name && ed25519.Verify(k.Key, []byte(fp), sig) {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("narinfo: %w: %s has no valid signature by a trusted key (%d Sig fields)", ErrNixSig, n.StorePath, len(n.Sigs))
}
