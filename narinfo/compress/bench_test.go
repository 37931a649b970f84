package compress

import (
	"bytes"
	"io"
	"os/exec"
	"testing"
)

// BenchmarkNewReader decompresses 4 MiB of sample data per method; "none"
// is the baseline (a copy), so one run gives each decoder's cost against
// it. lzip input comes from the lzip tool when it is installed.
func BenchmarkNewReader(b *testing.B) {
	data := sample(4 << 20)
	for _, m := range []string{None, Gzip, XZ, Zstd, Lzip} {
		var buf bytes.Buffer
		if m == Lzip {
			cmd := exec.Command("lzip", "-c", "-6")
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.Output()
			if err != nil {
				b.Logf("lzip: %v", err)
				continue
			}
			buf.Write(out)
		} else {
			w, _ := NewWriter(&buf, m, 0)
			w.Write(data)
			w.Close()
		}
		b.Run(m, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ReportMetric(float64(buf.Len())/float64(len(data)), "ratio")
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(buf.Bytes()), m)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
					b.Fatal(n, err)
				}
				r.Close()
			}
		})
	}
}
