package compress

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// sample is compressible and not trivially so: text-like runs with random
// words, and a stretch of random bytes.
func sample(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("nar store gnu nix eris block narinfo substitute hello world /bin/sh libc")
	var b bytes.Buffer
	for b.Len() < n*3/4 {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(" \n"[rng.IntN(2)])
	}
	for b.Len() < n {
		b.WriteByte(byte(rng.Uint32()))
	}
	return b.Bytes()[:n]
}

func decompress(t testing.TB, compressed []byte, method string) ([]byte, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(compressed), method)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 1000, 300 << 10} {
		data := sample(size)
		for _, m := range []string{None, Gzip, XZ, Zstd} {
			for _, level := range []int{0, 1, 9} {
				var buf bytes.Buffer
				w, err := NewWriter(&buf, m, level)
				if err != nil {
					t.Fatalf("%s: %v", m, err)
				}
				if _, err := w.Write(data); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				got, err := decompress(t, buf.Bytes(), m)
				if err != nil {
					t.Fatalf("%s level %d size %d: %v", m, level, size, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s level %d size %d: round trip differs", m, level, size)
				}
			}
		}
	}
}

// TestReadsTools decodes what the reference command-line tools write,
// including multi-member lzip and concatenated streams.
func TestReadsTools(t *testing.T) {
	data := sample(200 << 10)
	cases := []struct {
		method string
		cmd    []string
	}{
		{Gzip, []string{"gzip", "-c", "-9"}},
		{Bzip2, []string{"bzip2", "-c"}},
		{XZ, []string{"xz", "-c", "-6"}},
		{XZ, []string{"xz", "-c", "-9e"}},
		{Zstd, []string{"zstd", "-c", "-19", "-q"}},
		{Lzip, []string{"lzip", "-c", "-9"}},
		{Lzip, []string{"lzip", "-c", "-0"}},
		{Lzip, []string{"lzip", "-c", "-6", "--member-size=100KiB"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.cmd, " "), func(t *testing.T) {
			if _, err := exec.LookPath(c.cmd[0]); err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s missing under CI (.ci/run installs it)", c.cmd[0])
				}
				t.Skipf("%s not installed", c.cmd[0])
			}
			cmd := exec.Command(c.cmd[0], c.cmd[1:]...)
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			got, err := decompress(t, out, c.method)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("decompressed bytes differ from the input")
			}
			// Two streams back to back are one stream of both (gzip, xz,
			// zstd, lzip members; bzip2 too).
			got, err = decompress(t, append(append([]byte{}, out...), out...), c.method)
			if err != nil {
				t.Fatalf("concatenated: %v", err)
			}
			if !bytes.Equal(got, append(append([]byte{}, data...), data...)) {
				t.Fatal("concatenated streams decompress to something else")
			}
		})
	}
}

func TestLzipDamage(t *testing.T) {
	if _, err := exec.LookPath("lzip"); err != nil {
		t.Skip("lzip not installed")
	}
	data := sample(50 << 10)
	cmd := exec.Command("lzip", "-c", "-6")
	cmd.Stdin = bytes.NewReader(data)
	good, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		return b
	}
	cases := map[string][]byte{
		"magic":          flip(1),
		"version":        flip(4),
		"truncated":      good[:len(good)-7],
		"crc":            flip(len(good) - 19),
		"data size":      flip(len(good) - 13),
		"member size":    flip(len(good) - 5),
		"trailing bytes": append(bytes.Clone(good), "garbage!"...),
		"stream":         flip(len(good) / 2),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := decompress(t, b, Lzip)
			if err == nil {
				t.Fatalf("damaged stream accepted (%d bytes out)", len(got))
			}
			if !errors.Is(err, ErrLzip) {
				t.Fatalf("error %q does not name lzip", err)
			}
		})
	}
}

func TestDamageIsAnError(t *testing.T) {
	data := sample(100 << 10)
	for _, m := range []string{Gzip, XZ, Zstd} {
		var buf bytes.Buffer
		w, _ := NewWriter(&buf, m, 0)
		w.Write(data)
		w.Close()
		b := buf.Bytes()
		for _, cut := range []int{len(b) / 2, len(b) - 1} {
			if got, err := decompress(t, b[:cut], m); err == nil && bytes.Equal(got, data) {
				t.Errorf("%s truncated to %d bytes decompressed to the whole", m, cut)
			} else if err == nil {
				t.Errorf("%s truncated to %d bytes: no error", m, cut)
			}
		}
	}
}

func TestUnknown(t *testing.T) {
	if _, err := NewReader(strings.NewReader(""), "br"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("br: %v", err)
	}
	if _, err := NewWriter(io.Discard, Lzip, 0); !errors.Is(err, ErrUnknown) {
		t.Fatalf("lzip writer: %v", err)
	}
	if r, err := NewReader(strings.NewReader("x"), ""); err != nil {
		t.Fatal(err)
	} else if b, _ := io.ReadAll(r); string(b) != "x" {
		t.Fatal("empty method is not none")
	}
	if Ext(Zstd) != ".zst" || Ext(None) != "" || Ext("XZ") != ".xz" {
		t.Fatal("Ext")
	}
}

// FuzzNewReader: any input, any method, never a panic, and a stream that
// decodes without error under lzip re-encodes to itself through the tool's
// own checks (CRC and sizes in the trailer).
func FuzzNewReader(f *testing.F) {
	for _, m := range []string{Gzip, XZ, Zstd} {
		var buf bytes.Buffer
		w, _ := NewWriter(&buf, m, 1)
		w.Write([]byte("hello hello hello nar"))
		w.Close()
		f.Add(buf.Bytes(), m)
	}
	f.Fuzz(func(t *testing.T, b []byte, method string) {
		r, err := NewReader(bytes.NewReader(b), method)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(r, 1<<20))
		r.Close()
	})
}
