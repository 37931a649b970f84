package narinfo_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"erismount/eris"
	"erismount/narinfo"
	"erismount/narinfo/nar"
)

func testCap(t testing.TB, b byte) eris.ReadCapability {
	t.Helper()
	c, err := eris.NewReadCapability(eris.BlockSize1K, 1, eris.Ref{b}, eris.Key{b, 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sampleNarinfo(t testing.TB) *narinfo.Narinfo {
	t.Helper()
	h, _ := nar.ParseHash("sha256:00f89byy0fpkv87ajlllhjzidpa4nncghhxscmpqmv3zaj074kyq")
	return &narinfo.Narinfo{
		StorePath: "/gnu/store/1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0",
		Locations: []narinfo.Location{
			{URL: "nar/zstd/1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0", Compression: "zstd", FileSize: 220},
			{URL: "nar/1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0", Compression: "none", FileSize: 1256},
		},
		NarHash:    h,
		NarSize:    1256,
		ERIS:       testCap(t, 7),
		References: []string{"0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0"},
		Deriver:    "6w3fl3a3qv0s6ppz2gpxx0bqb1rx1p5d-erismount-tree-1.0.drv",
	}
}

// TestLayouts writes both orders, checks the field order and that each
// parses back to the same narinfo with a valid signature.
func TestLayouts(t *testing.T) {
	n := sampleNarinfo(t)
	tests := []struct {
		layout narinfo.Layout
		order  []string
	}{
		{narinfo.Classic, []string{"StorePath", "URL", "Compression", "FileSize", "URL", "Compression", "FileSize", "NarHash", "NarSize", "ERIS", "References", "Deriver", "Signature"}},
		{narinfo.ERISv4, []string{"StorePath", "NarHash", "NarSize", "ERIS", "References", "Deriver", "Signature", "URL", "Compression", "FileSize", "URL", "Compression", "FileSize"}},
	}
	for _, tt := range tests {
		t.Run(tt.layout.String(), func(t *testing.T) {
			raw, err := n.Sign(tt.layout, testKey(t), "erismount-test")
			if err != nil {
				t.Fatal(err)
			}
			var order []string
			for _, l := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
				name, _, _ := strings.Cut(l, ":")
				order = append(order, name)
			}
			if !slices.Equal(order, tt.order) {
				t.Errorf("field order %v, want %v", order, tt.order)
			}
			back, err := narinfo.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if o, err := back.Verify(testACL(t)); o != narinfo.Valid {
				t.Fatalf("%v: %v", o, err)
			}
			if back.StorePath != n.StorePath || back.NarHash != n.NarHash || back.NarSize != n.NarSize || back.ERIS != n.ERIS ||
				!slices.Equal(back.References, n.References) || back.Deriver != n.Deriver || !slices.Equal(back.Locations, n.Locations) {
				t.Errorf("parsed back %+v, want %+v", back, n)
			}
			if c, err := back.Capability(); err != nil || c != n.ERIS {
				t.Errorf("Capability = %v, %v", c, err)
			}
			if !bytes.Equal(back.Raw(), raw) {
				t.Errorf("Raw() is not the input")
			}
			// Unsigned output is the same text without the Signature line.
			unsigned, err := n.Marshal(tt.layout)
			if err != nil {
				t.Fatal(err)
			}
			sigLine := raw[bytes.Index(raw, []byte("Signature:")):]
			sigLine = sigLine[:bytes.IndexByte(sigLine, '\n')+1]
			if want := bytes.Replace(raw, sigLine, nil, 1); !bytes.Equal(unsigned, want) {
				t.Errorf("Marshal:\n%s\nwant\n%s", unsigned, want)
			}
		})
	}
}

func TestParseVectorFields(t *testing.T) {
	n, err := narinfo.Parse(readFile(t, "vector-a.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	if n.StorePath != "/gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0" || n.NarSize != 120 ||
		n.NarHash.Nix32() != "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw" || len(n.References) != 0 ||
		n.Deriver != "" || len(n.Locations) != 1 || n.Locations[0] != (narinfo.Location{URL: "nar/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0", Compression: "none", FileSize: 120}) {
		t.Errorf("fields: %+v", n)
	}
	if n.StoreDir() != "/gnu/store" || n.BaseName() != "0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0" {
		t.Errorf("StoreDir %q BaseName %q", n.StoreDir(), n.BaseName())
	}
	signed, ok := n.SignedPart()
	if !ok || len(signed) != 264 { // spec §1.8: signed body of vector A is 264 bytes
		t.Errorf("signed part has %d bytes, want 264", len(signed))
	}
	if _, err := n.Capability(); !errors.Is(err, narinfo.ErrNoERIS) {
		t.Errorf("Capability without ERIS: %v", err)
	}
}

// base is a minimal unsigned narinfo to build cases from.
const base = "StorePath: /gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0\n" +
	"NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n" +
	"NarSize: 120\n" +
	"References: \n"

const sigLine = "Signature: 1;h;KA==\n"

func TestParseERIS(t *testing.T) {
	c1, c2 := testCap(t, 1).URN(), testCap(t, 2).URN()
	x2 := "urn:erisx2:BIBC2LUTIQH43SAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	tests := []struct {
		name    string
		text    string
		want    eris.ReadCapability
		wantErr error // from Capability
		parse   string
	}{
		{name: "none", text: base, wantErr: narinfo.ErrNoERIS},
		{name: "one", text: base + "ERIS: " + c1 + "\n", want: testCap(t, 1)},
		{name: "same twice", text: base + "ERIS: " + c1 + "\nERIS: " + c1 + "\n", want: testCap(t, 1)},
		{name: "two values", text: base + "ERIS: " + c1 + "\nERIS: " + c2 + "\n", parse: "ERIS repeated with another value"},
		{name: "erisx2 only", text: base + "ERIS: " + x2 + "\nERIS: " + x2 + "X\n", wantErr: narinfo.ErrERISUnsupported},
		{name: "erisx2 and eris", text: base + "ERIS: " + x2 + "\nERIS: " + c1 + "\n", want: testCap(t, 1)},
		{name: "malformed", text: base + "ERIS: urn:eris:AAAA\n", parse: "ERIS:"},
		{name: "other scheme", text: base + "ERIS: urn:ipfs:Qm\n", parse: "ERIS:"},
		{name: "after the signature", text: base + sigLine + "ERIS: " + c1 + "\n", parse: "ERIS after the Signature line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := narinfo.Parse([]byte(tt.text))
			if tt.parse != "" {
				if !errors.Is(err, narinfo.ErrSyntax) || !strings.Contains(err.Error(), tt.parse) {
					t.Fatalf("got %v, want a syntax error about %q", err, tt.parse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := n.Capability()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Capability: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || c != tt.want {
				t.Fatalf("Capability = %v, %v; want %v", c, err, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, text, reason string }{
		{"empty", "", "no StorePath"},
		{"missing NarHash", strings.Replace(base, "NarHash", "NarHush", 1), "no NarHash"},
		{"missing References", strings.Replace(base, "References: \n", "", 1), "no References"},
		{"NarHash below the signature", strings.Replace(base, "NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n", "", 1) + sigLine + "NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n", "NarHash after the Signature line"},
		{"StorePath after signature", base + sigLine + "StorePath: /gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0\n", "StorePath after"},
		{"NarSize after signature", base + sigLine + "NarSize: 120\n", "NarSize after"},
		{"References after signature", base + sigLine + "References: \n", "References after"},
		{"Deriver after signature", base + sigLine + "Deriver: 6w3fl3a3qv0s6ppz2gpxx0bqb1rx1p5d-erismount-tree-1.0.drv\n", "Deriver after"},
		{"StorePath repeated", base + "StorePath: /gnu/store/1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0\n", "StorePath repeated"},
		{"NarSize repeated", base + "NarSize: 121\n", "NarSize repeated"},
		{"two signatures", base + sigLine + "Signature: 1;h;KB==\n", "Signature repeated"},
		{"Signature inside a line", base + "X-Note: Signature: no\n", "inside a line"},
		{"CR", strings.ReplaceAll(base, "\n", "\r\n"), "CR"},
		{"NUL", base + "X: \x00\n", "NUL"},
		{"invalid UTF-8", base + "X: \xff\n", "UTF-8"},
		{"comment", "# comment\n" + base, "not a `Name: value` field"},
		{"continuation", base + "+ more\n", "not a `Name: value` field"},
		{"no colon", base + "Hello\n", "not a `Name: value` field"},
		{"bad field name", base + "Na me: x\n", "bad field name"},
		{"text after an empty line", base + "\nURL: x\n", "after an empty line"},
		{"too large", base + "X: " + strings.Repeat("x", narinfo.MaxSize) + "\n", "exceeds"},
		{"NarSize sign", strings.Replace(base, "NarSize: 120", "NarSize: +120", 1), "not a decimal size"},
		{"NarSize leading zero", strings.Replace(base, "NarSize: 120", "NarSize: 0120", 1), "not a decimal size"},
		{"NarSize negative", strings.Replace(base, "NarSize: 120", "NarSize: -1", 1), "not a decimal size"},
		{"NarSize overflow", strings.Replace(base, "NarSize: 120", "NarSize: 99999999999999999999", 1), "not a decimal size"},
		{"NarHash md5", strings.Replace(base, "sha256:04zw", "md5:04zw", 1), "NarHash"},
		{"NarHash short", strings.Replace(base, "dqw\n", "dq\n", 1), "NarHash"},
		{"relative StorePath", strings.Replace(base, "/gnu/store/0q7p", "gnu/0q7p", 1), "StorePath"},
		{"short hash part", strings.Replace(base, "0q7pcz9hnscl1x29v4nws03i2ii5c8vc", "0q7pcz9hnscl1x29v4nws03i2ii5c8v", 1), "StorePath"},
		{"bad hash character", strings.Replace(base, "0q7pcz9hnscl1x29v4nws03i2ii5c8vc-", "0q7pcz9hnscl1x29v4nws03i2ii5c8ve-", 1), "StorePath"},
		{"store path with ..", strings.Replace(base, "/gnu/store/", "/gnu/store/../", 1), "StorePath"},
		{"bad reference", strings.Replace(base, "References: ", "References: ../../etc", 1), "References"},
		{"bad deriver", base + "Deriver: /gnu/store/x.drv\n", "Deriver"},
		{"FileSize count", base + "URL: a\nCompression: none\nURL: b\nCompression: none\nFileSize: 1\n", "2 URL fields but 1 FileSize"},
		{"Compression count", base + "URL: a\nURL: b\nCompression: none\n", "2 URL fields but 1 Compression"},
		{"bad FileSize", base + "URL: a\nCompression: none\nFileSize: x\n", "FileSize"},
		{"URL with blanks", base + "URL: a b\nCompression: none\n", "URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := narinfo.Parse([]byte(tt.text))
			if !errors.Is(err, narinfo.ErrSyntax) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("got %v, want a syntax error about %q", err, tt.reason)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		check func(*narinfo.Narinfo) bool
	}{
		{"locations after the signature", base + sigLine + "URL: nar/x\nCompression: none\nFileSize: 120\n",
			func(n *narinfo.Narinfo) bool { return len(n.Locations) == 1 && n.Locations[0].FileSize == 120 }},
		{"locations on both sides", "URL: a\nCompression: gzip\n" + base + sigLine + "URL: b\nCompression: none\n",
			func(n *narinfo.Narinfo) bool { return len(n.Locations) == 2 && n.Locations[1].URL == "b" }},
		{"no locations", base, func(n *narinfo.Narinfo) bool { return len(n.Locations) == 0 }},
		{"fields in any order", "References: \nNarSize: 120\nNarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\nStorePath: /gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-erismount-hello-1.0\n",
			func(n *narinfo.Narinfo) bool { return n.NarSize == 120 }},
		{"repeated with the same value", base + "NarSize: 120\n", func(n *narinfo.Narinfo) bool { return n.NarSize == 120 }},
		{"unknown fields", base + "X-Future: 1\nCA: fixed:r:sha256:abc\n", func(n *narinfo.Narinfo) bool { return true }},
		{"trailing empty lines", base + "\n\n", func(n *narinfo.Narinfo) bool { return true }},
		{"no final newline", strings.TrimSuffix(base, "\n") + "\nSystem: x86_64-linux", func(n *narinfo.Narinfo) bool { return n.System == "x86_64-linux" }},
		{"value keeps trailing blanks", base + "System: x86_64-linux  \n", func(n *narinfo.Narinfo) bool { return n.System == "x86_64-linux  " }},
		{"Nix sigs", base + "Sig: cache.example.org-1:AAAA\nSig: other:BBBB\n", func(n *narinfo.Narinfo) bool { return len(n.Sigs) == 2 }},
		{"hex NarHash", strings.Replace(base, "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw", "sha256:1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13", 1),
			func(n *narinfo.Narinfo) bool {
				return n.NarHash.Nix32() == "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"
			}},
		{"references split on blanks", strings.Replace(base, "References: ", "References: 0q7pcz9hnscl1x29v4nws03i2ii5c8vc-a  1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-b", 1),
			func(n *narinfo.Narinfo) bool { return len(n.References) == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := narinfo.Parse([]byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(n) {
				t.Fatalf("parsed %+v", n)
			}
		})
	}
}

func TestWriteRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*narinfo.Narinfo)
	}{
		{"bad store path", func(n *narinfo.Narinfo) { n.StorePath = "/gnu/store/x" }},
		{"no hash", func(n *narinfo.Narinfo) { n.NarHash = nar.Hash{} }},
		{"newline in a value", func(n *narinfo.Narinfo) { n.System = "x\nNarHash: y" }},
		{"Signature: in a value", func(n *narinfo.Narinfo) { n.Locations[0].URL = "nar/Signature:x" }},
		{"missing compression", func(n *narinfo.Narinfo) { n.Locations[0].Compression = "" }},
		{"some file sizes unknown", func(n *narinfo.Narinfo) { n.Locations[0].FileSize = 0 }},
		{"bad reference", func(n *narinfo.Narinfo) { n.References = []string{"x y"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := sampleNarinfo(t)
			tt.edit(n)
			if _, err := n.Marshal(narinfo.Classic); err == nil {
				t.Fatal("written")
			}
		})
	}
	if _, err := sampleNarinfo(t).Sign(narinfo.Classic, testKey(t), "a;b"); err == nil {
		t.Error("host with ';' accepted")
	}
}

func TestEquivalent(t *testing.T) {
	a := sampleNarinfo(t)
	tests := []struct {
		name string
		edit func(*narinfo.Narinfo)
		want bool
	}{
		{"same", func(*narinfo.Narinfo) {}, true},
		{"other locations, deriver, ERIS", func(n *narinfo.Narinfo) {
			n.Locations, n.Deriver, n.ERIS = nil, "", testCap(t, 9)
		}, true},
		{"other NarHash", func(n *narinfo.Narinfo) { n.NarHash[0] ^= 1 }, false},
		{"other NarSize", func(n *narinfo.Narinfo) { n.NarSize++ }, false},
		{"other StorePath", func(n *narinfo.Narinfo) { n.StorePath += "x" }, false},
		{"references reordered", func(n *narinfo.Narinfo) { n.References = append([]string{itemBase}, n.References...) }, false},
	}
	for _, tt := range tests {
		b := sampleNarinfo(t)
		tt.edit(b)
		if got := a.Equivalent(b); got != tt.want {
			t.Errorf("%s: Equivalent = %v", tt.name, got)
		}
	}
}
