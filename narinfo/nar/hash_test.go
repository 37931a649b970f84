package nar_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"erismount/narinfo/nar"
)

func TestNix32KnownValues(t *testing.T) {
	sha1Empty := sha1.Sum(nil)
	known, _ := hex.DecodeString("1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13")
	sha256Empty := sha256.Sum256(nil)
	tests := []struct {
		name string
		in   []byte
		want string
	}{ // spec §2.2, checked there with nix-hash
		{"sha256 of empty", sha256Empty[:], "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
		{"sha1 of empty", sha1Empty[:], "143xibwh31h9bvxzalr0sjvbbvpa6ffs"},
		{"file1 nar", known, "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"},
		{"empty", nil, ""},
		{"one byte", []byte{0xff}, "7z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nar.EncodeNix32(tt.in); got != tt.want {
				t.Fatalf("EncodeNix32 = %s, want %s", got, tt.want)
			}
			back, err := nar.DecodeNix32(tt.want)
			if err != nil || !bytes.Equal(back, tt.in) {
				t.Fatalf("DecodeNix32 = %x, %v; want %x", back, err, tt.in)
			}
		})
	}
}

func TestParseHash(t *testing.T) {
	want := sha256.Sum256(nil)
	for _, s := range []string{
		"sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
		"sha256:" + hex.EncodeToString(want[:]),
	} {
		h, err := nar.ParseHash(s)
		if err != nil || h != nar.Hash(want) {
			t.Errorf("ParseHash(%s) = %v, %v", s, h, err)
		}
	}
	if got := nar.Hash(want).String(); got != "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73" {
		t.Errorf("String = %s", got)
	}
	bad := []struct{ name, in string }{
		{"no prefix", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
		{"other algorithm", "sha512:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
		{"letter e", "sha256:emdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
		{"overflow bits", "sha256:2mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
		{"short", "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7"},
		{"upper-case hex", "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"},
		{"empty", ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := nar.ParseHash(tt.in); !errors.Is(err, nar.ErrHash) {
				t.Fatalf("got %v, want ErrHash", err)
			}
		})
	}
}

func TestDecodeNix32Rejects(t *testing.T) {
	for _, s := range []string{"8z", "0", "00t", "zzz"} {
		if b, err := nar.DecodeNix32(s); err == nil {
			t.Errorf("DecodeNix32(%q) = %x, want an error", s, b)
		}
	}
}
