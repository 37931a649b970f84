package eris_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"erismount/eris"
)

const goodURN = "urn:eris:BIAD77QDJMFAKZYH2DXBUZYAP3MXZ3DJZVFYQ5DFWC6T65WSFCU5S2IT4YZGJ7AC4SYQMP2DM2ANS2ZTCP3DJJIRV733CRAAHOSWIYZM3M"

func TestParseURN(t *testing.T) {
	good, err := eris.ParseURN(goodURN)
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := good.MarshalBinary()
	withByte := func(i int, v byte) string {
		b := append([]byte(nil), bin...)
		b[i] = v
		return eris.URNPrefix + b32.EncodeToString(b)
	}
	cases := []struct {
		name, urn, wantMsg string
	}{
		{"bad prefix", "urn:foo:" + goodURN[9:], "does not start with"},
		{"pre-1.0 URN", "urn:erisx2:AACXPZNDNXFLO4IOMF6VIV2ZETGUJEUU7GN4AHPWNKEN6KJMCNP6YNUMVW2SCGZUJ4L3FHIXVECRZQ3QSBOTYPGXHN2WRBMB27NXDTAP24", "pre-1.0"},
		{"empty", "", "does not start with"},
		{"too short", goodURN[:50], "base32 characters"},
		{"too long", goodURN + "AA", "base32 characters"},
		{"bad base32", goodURN[:20] + "1" + goodURN[21:], "bad base32"},
		{"lower-case base32", strings.ToLower(goodURN), "bad base32"},
		{"unknown block size", withByte(0, 0x0b), "unknown block size byte 0x0b"},
		{"level out of range", withByte(1, 200), "level 200 out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := eris.ParseURN(c.urn)
			if err == nil {
				t.Fatalf("ParseURN(%q) succeeded", c.urn)
			}
			if !errors.Is(err, eris.ErrMalformed) {
				t.Errorf("error %v does not match ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("error %q does not say %q", err, c.wantMsg)
			}
		})
	}
	// The scheme is case-insensitive (RFC 8141).
	if rc, err := eris.ParseURN("URN:ERIS:" + goodURN[9:]); err != nil || rc != good {
		t.Errorf("upper-case prefix: %v", err)
	}
}

func TestCapabilityForms(t *testing.T) {
	rc, _ := eris.ParseURN(goodURN)
	bin, err := rc.MarshalBinary()
	if err != nil || len(bin) != 66 || bin[0] != 0x0a {
		t.Fatalf("binary %x, %v", bin, err)
	}
	var back eris.ReadCapability
	if err := back.UnmarshalBinary(bin); err != nil || back != rc {
		t.Fatalf("binary round trip: %v", err)
	}
	if err := back.UnmarshalBinary(bin[:65]); err == nil || !strings.Contains(err.Error(), "66") {
		t.Errorf("short binary: %v", err)
	}

	// CBOR: tag 276 (0xd9 0x01 0x14) around a 66-byte string (0x58 0x42).
	enc, err := cbor.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{0xd9, 0x01, 0x14, 0x58, 0x42}, bin...); !bytes.Equal(enc, want) {
		t.Fatalf("CBOR %x\nwant %x", enc, want)
	}
	var fromCBOR eris.ReadCapability
	if err := cbor.Unmarshal(enc, &fromCBOR); err != nil || fromCBOR != rc {
		t.Fatalf("CBOR round trip: %v", err)
	}
	wrongTag, _ := cbor.Marshal(cbor.Tag{Number: 277, Content: bin})
	if err := cbor.Unmarshal(wrongTag, &fromCBOR); err == nil || !strings.Contains(err.Error(), "tag 277") {
		t.Errorf("wrong tag: %v", err)
	}

	text, _ := rc.MarshalText()
	var fromText eris.ReadCapability
	if err := fromText.UnmarshalText(text); err != nil || fromText != rc || string(text) != goodURN {
		t.Fatalf("text round trip: %v", err)
	}
	if (eris.ReadCapability{}).URN() != "" || !(eris.ReadCapability{}).IsZero() {
		t.Error("zero capability")
	}
}

func TestParseRef(t *testing.T) {
	ref := eris.RefOf([]byte("x"))
	back, err := eris.ParseRef(ref.String())
	if err != nil || back != ref {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "ABC", ref.String()[:51] + "1", ref.String() + "A"} {
		if _, err := eris.ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) succeeded", bad)
		}
	}
	block := make([]byte, 1024)
	if err := eris.RefOf(block).Verify(block); err != nil {
		t.Errorf("Verify good block: %v", err)
	}
	if err := ref.Verify(block); !errors.Is(err, eris.ErrCorrupt) {
		t.Errorf("Verify wrong block: %v", err)
	}
	if err := eris.RefOf(block[:1000]).Verify(block[:1000]); !errors.Is(err, eris.ErrCorrupt) {
		t.Errorf("Verify odd-sized block: %v", err)
	}
}

func TestMaxSize(t *testing.T) {
	for _, tc := range []struct {
		bs, level int
		want      int64
	}{
		{eris.BlockSize1K, 0, 1024},
		{eris.BlockSize1K, 1, 1024 * 16},
		{eris.BlockSize32K, 0, 32 << 10},
		{eris.BlockSize32K, 1, 16 << 20},
		{eris.BlockSize32K, 2, 8 << 30},
		{eris.BlockSize32K, eris.MaxLevel(eris.BlockSize32K), math.MaxInt64}, // overflows: capped
		{eris.BlockSize1K, eris.MaxLevel(eris.BlockSize1K), math.MaxInt64},
	} {
		rc, err := eris.NewReadCapability(tc.bs, tc.level, eris.Ref{1}, eris.Key{2})
		if err != nil {
			t.Fatal(err)
		}
		if got := rc.MaxSize(); got != tc.want {
			t.Errorf("block size %d, level %d: MaxSize %d, want %d", tc.bs, tc.level, got, tc.want)
		}
	}
}
