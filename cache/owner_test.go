package cache

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"erismount/eris"
)

func TestOwnerAlive(t *testing.T) {
	self := selfOwner()
	if self.start == 0 {
		t.Skip("no /proc/self/stat start time on this system")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("cannot run true(1) to get a dead PID: %v", err)
	}
	tests := []struct {
		name  string
		owner owner
		alive bool
	}{
		{"this process", self, true},
		{"this PID, start time unknown", owner{pid: self.pid}, true},
		{"a process that exited", owner{boot: self.boot, pid: dead.Process.Pid, start: 1}, false},
		{"a reused PID", owner{boot: self.boot, pid: self.pid, start: self.start + 1}, false},
		{"an earlier boot", owner{boot: "00000000-0000-0000-0000-000000000000", pid: self.pid, start: self.start}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOwner(tc.owner.String())
			if err != nil || o != tc.owner {
				t.Fatalf("parseOwner(%q) = %+v, %v", tc.owner.String(), o, err)
			}
			if got := o.alive(); got != tc.alive {
				t.Errorf("alive() = %v, want %v", got, tc.alive)
			}
		})
	}
	for _, bad := range []string{"", "pid", "pid=x", "start=1 boot=b", "pid=-3"} {
		if o, err := parseOwner(bad); err == nil {
			t.Errorf("parseOwner(%q) = %+v, want an error", bad, o)
		}
	}
}

// TestStaleMountPins writes mount pins of a dead process, of a garbled
// owner and of this process into a file; opening it drops the first two.
func TestStaleMountPins(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "b.sqlite")
	s, err := OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("cannot run true(1) to get a dead PID: %v", err)
	}
	db := openDB(fileURI(path, "_mutex=no"))
	defer db.Close()
	live := owner{boot: bootID(), pid: os.Getpid(), n: 1}
	live.start, _ = procStart(live.pid)
	ref := eris.RefOf(make([]byte, 1024))
	for i, o := range []string{
		"",
		owner{boot: bootID(), pid: dead.Process.Pid, start: 1, n: 2}.String(),
		"garbled",
		live.String(),
	} {
		if _, err := db.Exec(`INSERT INTO pins(id, name, owner, created) VALUES(?, 'urn:x', ?, 0)`, i+1, o); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO pinned(ref, pin) VALUES(?, ?)`, ref[:], i+1); err != nil {
			t.Fatal(err)
		}
	}
	s, err = OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pins, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 2 || pins[0].Owner != "" || pins[1].Owner != live.String() {
		t.Fatalf("pins after open: %+v; want the kept pin and this process's mount pin", pins)
	}
	var tags int
	if err := db.QueryRow(`SELECT count(*) FROM pinned`).Scan(&tags); err != nil || tags != 2 {
		t.Errorf("%d tags left (%v), want 2: a dropped pin's tags go with it", tags, err)
	}
}

// TestMigrateFromVersion1 opens a file written by the first schema, with
// blocks but no totals table: the migration adds it with the right sums.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.sqlite")
	db := openDB(fileURI(path, "_mutex=no"))
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, conn, 1); err != nil {
		t.Fatal(err)
	}
	var blocks [][]byte
	for i := range 5 {
		b := make([]byte, 1024<<(5*(i%2)))
		b[0] = byte(i)
		blocks = append(blocks, b)
		ref := eris.RefOf(b)
		if _, err := conn.ExecContext(ctx, `INSERT INTO blocks VALUES(?, ?, ?, ?)`, ref[:], i+1, len(b), i); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO data VALUES(?, ?)`, i+1, b); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	db.Close()

	s, err := OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 5 || st.Bytes != 3*1024+2*32768 {
		t.Errorf("after migration: %d blocks of %d bytes, want 5 of %d", st.Blocks, st.Bytes, 3*1024+2*32768)
	}
	for _, b := range blocks {
		if got, err := s.GetBlock(ctx, eris.RefOf(b)); err != nil || string(got) != string(b) {
			t.Errorf("GetBlock after migration: %d bytes, %v", len(got), err)
		}
	}
	var version int
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != schemaVersion {
		t.Errorf("user_version %d (%v), want %d", version, err, schemaVersion)
	}
}

// FuzzParseOwner: owners are read back from a file anyone with write
// access could have edited; parsing never panics, and what parses prints
// back to an owner that parses the same.
func FuzzParseOwner(f *testing.F) {
	f.Add("pid=1234 start=98765 boot=428c6e68-2435-46ee-9be5-b55472c5b327 n=42")
	f.Add("pid=1")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOwner(s)
		if err != nil {
			return
		}
		if o.pid <= 0 {
			t.Fatalf("parseOwner(%q) accepted pid %d", s, o.pid)
		}
		if o2, err := parseOwner(o.String()); err != nil || o2 != o {
			t.Fatalf("parseOwner(%q) = %+v; its String %q parses to %+v, %v", s, o, o.String(), o2, err)
		}
	})
}
