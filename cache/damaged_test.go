package cache_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/cache"
	"erismount/eris"
	"erismount/eris/eristest"
)

// garblePage overwrites page n (1-based) of the file at path with garbage,
// or the first 100 bytes (the header) when n is 0.
func garblePage(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, size := (n-1)*16384, int64(16384)
	if n == 0 {
		off, size = 0, 100
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5, 0x5A, 0x00, 0xFF}, int(size/4)), off); err != nil {
		t.Fatal(err)
	}
}

// rootPage returns the root page of a table or index of the file.
func rootPage(t *testing.T, path, name string) int64 {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	var root int64
	if err := db.QueryRow(`SELECT rootpage FROM sqlite_schema WHERE name = ?`, name).Scan(&root); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestSQLiteDamagedFile: a store file SQLite finds damaged when it is
// opened is moved aside with its -wal and -shm files, a fresh store starts
// in its place, and one ERROR line says so, naming the file and the pins
// lost with it when they can be read.
func TestSQLiteDamagedFile(t *testing.T) {
	ctx := context.Background()
	pins := []string{"urn:eris:KEPT-ONE", "urn:eris:KEPT-TWO"}
	tests := []struct {
		name     string
		damage   func(t *testing.T, path string)
		lostPins string // in the log line
	}{
		{"garbage over the header", func(t *testing.T, path string) { garblePage(t, path, 0) }, "unknown"},
		{"garbage over an index page", func(t *testing.T, path string) {
			garblePage(t, path, rootPage(t, path, "blocks_atime"))
		}, strings.Join(pins, " ")},
		{"garbage over the totals", func(t *testing.T, path string) {
			garblePage(t, path, rootPage(t, path, "totals"))
		}, strings.Join(pins, " ")},
		{"not a database at all", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("this is not an SQLite file\n", 2000)), 0o600)
		}, "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "blocks.sqlite")
			s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			bs := blocks(1, 40, eris.BlockSize32K)
			for i, name := range pins {
				p, err := s.Pin(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				putAll(t, p.View(s), bs[i*20:(i+1)*20])
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path)
			damaged, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			log, rec := newLogRecorder(t)
			s, err = cache.OpenSQLite(path, cache.SQLiteOptions{Logger: log})
			if err != nil {
				t.Fatalf("open of the damaged store: %v", err)
			}
			defer s.Close()
			st, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Replaced == nil || st.Blocks != 0 || st.Pins != 0 {
				t.Fatalf("stats %+v: want a fresh store that says what it replaced", st)
			}
			aside := st.Replaced.Aside
			if !strings.HasPrefix(filepath.Base(aside), "blocks.sqlite.damaged-") {
				t.Errorf("moved aside as %s", aside)
			}
			if kept, err := os.ReadFile(aside); err != nil || !bytes.Equal(kept, damaged) {
				t.Errorf("the damaged file is not kept as it was at %s (%v)", aside, err)
			}
			if n := rec.count(slog.LevelError, "damaged"); n != 1 {
				t.Fatalf("%d ERROR lines about the damage; want 1", n)
			}
			r, _ := rec.find("damaged")
			var text strings.Builder
			r.Attrs(func(a slog.Attr) bool { text.WriteString(a.Key + "=" + a.Value.String() + " "); return true })
			if !strings.Contains(text.String(), aside) || !strings.Contains(text.String(), "lost_pins="+tc.lostPins) {
				t.Errorf("the log line %q %s should name %s and the lost pins %q", r.Message, text.String(), aside, tc.lostPins)
			}
			// The fresh store works, and the next open says nothing.
			putAll(t, s, bs[:3])
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if b, err := s.GetBlock(ctx, bs[0].ref); err != nil || !bytes.Equal(b, bs[0].b) {
				t.Errorf("read from the fresh store: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = cache.OpenSQLite(path, cache.SQLiteOptions{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if st, _ := s.Stats(ctx); st.Replaced != nil || st.Blocks != 3 {
				t.Errorf("reopened: %+v; want the 3 blocks and no replacement", st)
			}
			if n := rec.count(slog.LevelError, "damaged"); n != 1 {
				t.Errorf("%d ERROR lines about the damage after reopening; want still 1", n)
			}
		})
	}
}

// TestSQLiteDamagedInUse: damage that opening does not reach (a page in
// the middle of the bytes) shows on first use: reads go to the remote, one
// warning is logged for the disk, and Close moves the file aside, saying so
// once with the pins lost, so that the next open starts fresh.
func TestSQLiteDamagedInUse(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "blocks.sqlite")
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bs := blocks(1, 60, eris.BlockSize32K)
	p, err := s.Pin(ctx, "urn:eris:KEPT")
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, p.View(s), bs[:40])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	garblePage(t, path, middlePage(t, path))

	log, rec := newLogRecorder(t)
	s, err = cache.OpenSQLite(path, cache.SQLiteOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	remote := eristest.NewStore()
	putAll(t, remote, bs)
	tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(8 << 20), Disk: s, Remote: remote, Logger: log})
	for _, b := range bs {
		if got, err := tiered.GetBlock(ctx, b.ref); err != nil || !bytes.Equal(got, b.b) {
			t.Fatalf("read over a damaged file: %v", err)
		}
	}
	tiered.Flush(ctx)
	if err := tiered.Close(); err != nil {
		t.Log(err)
	}
	if n := rec.count(slog.LevelWarn, "cache disk reads fail"); n != 1 {
		t.Errorf("%d warnings about failing disk reads; want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Log(err)
	}
	if n := rec.count(slog.LevelError, "moved it aside"); n != 1 {
		t.Fatalf("%d lines saying the file was moved aside; want 1", n)
	}
	r, _ := rec.find("moved it aside")
	var text strings.Builder
	r.Attrs(func(a slog.Attr) bool { text.WriteString(a.Key + "=" + a.Value.String() + " "); return true })
	if !strings.Contains(text.String(), "lost_pins=urn:eris:KEPT") {
		t.Errorf("the log line %s should name the lost pin", text.String())
	}
	aside, _ := filepath.Glob(path + ".damaged-*[0-9Z]")
	if len(aside) != 1 {
		t.Fatalf("files moved aside: %v", aside)
	}
	s, err = cache.OpenSQLite(path, cache.SQLiteOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err := s.Stats(ctx); err != nil || st.Blocks != 0 || st.Replaced != nil {
		t.Errorf("after the damaged file was moved aside: %+v, %v; want a fresh store", st, err)
	}
}

// middlePage returns a page in the middle of the file that is no table's
// or index's root: the overflow page of some block's bytes.
func middlePage(t *testing.T, path string) int64 {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	var pages int64
	if err := db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	roots := map[int64]bool{}
	rows, err := db.Query(`SELECT rootpage FROM sqlite_schema`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r int64
		rows.Scan(&r)
		roots[r] = true
	}
	rows.Close()
	for p := pages / 2; p < pages; p++ {
		if !roots[p] {
			return p
		}
	}
	t.Fatal("no page to damage")
	return 0
}
