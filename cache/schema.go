package cache

import (
	"context"
	"database/sql"
	"fmt"
)

// applicationID marks an erismount block store ("ERIS" in ASCII) in the
// SQLite header, so a foreign database is refused instead of altered.
const applicationID = 0x45524953

// pageSize is set when the file is created. With 16 KiB pages a 32 KiB
// block spans three pages instead of nine, which measured about twice as
// fast to read as the 4 KiB default (BenchmarkSQLiteGet, see doc.go).
const pageSize = 16384

// migrations take the schema from version i to i+1 (PRAGMA user_version).
// Never edit one that has shipped: append a new one.
var migrations = []string{
	// 1: blocks. Metadata and bytes live in separate tables: SQLite rewrites
	// a whole row on UPDATE, so an access-time update on a row holding 32
	// KiB would rewrite the block. The metadata table is keyed by the
	// reference (WITHOUT ROWID: one b-tree), the bytes by an integer id (a
	// rowid table, which reads large values several times faster than a
	// WITHOUT ROWID table keyed by the 32-byte reference).
	`CREATE TABLE blocks(
		ref   BLOB PRIMARY KEY CHECK (length(ref) = 32),
		id    INTEGER NOT NULL,
		size  INTEGER NOT NULL,
		atime INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX blocks_atime ON blocks(atime);
	CREATE TABLE data(id INTEGER PRIMARY KEY, bytes BLOB NOT NULL);
	CREATE TRIGGER blocks_delete_data AFTER DELETE ON blocks BEGIN
		DELETE FROM data WHERE id = OLD.id;
	END;`,

	// 2: pins. owner is '' for a pin kept until unpinned, and names the
	// holding process for a mount pin (see owner.go). pinned tags
	// references, whether or not the block is stored yet.
	`CREATE TABLE pins(
		id      INTEGER PRIMARY KEY,
		name    TEXT NOT NULL,
		owner   TEXT NOT NULL DEFAULT '',
		created INTEGER NOT NULL,
		UNIQUE(name, owner)
	);
	CREATE TABLE pinned(
		ref BLOB NOT NULL,
		pin INTEGER NOT NULL,
		PRIMARY KEY(ref, pin)
	) WITHOUT ROWID;
	CREATE INDEX pinned_pin ON pinned(pin);`,

	// 3: totals, kept by triggers in the same transaction as every change,
	// so the size accounting survives crashes and restarts without a scan.
	`CREATE TABLE totals(
		one    INTEGER PRIMARY KEY CHECK (one = 1),
		blocks INTEGER NOT NULL,
		bytes  INTEGER NOT NULL
	);
	INSERT INTO totals SELECT 1, count(*), coalesce(sum(size), 0) FROM blocks;
	CREATE TRIGGER blocks_insert_totals AFTER INSERT ON blocks BEGIN
		UPDATE totals SET blocks = blocks + 1, bytes = bytes + NEW.size;
	END;
	CREATE TRIGGER blocks_delete_totals AFTER DELETE ON blocks BEGIN
		UPDATE totals SET blocks = blocks - 1, bytes = bytes - OLD.size;
	END;`,
}

// schemaVersion is the version this code reads and writes.
var schemaVersion = len(migrations)

// migrate brings the database on conn to version upTo in one immediate
// transaction, refusing files that are not ours or are newer than we are.
func migrate(ctx context.Context, conn *sql.Conn, upTo int) (err error) {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	var app, version, objects int64
	if err := conn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&app); err != nil {
		return err
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&objects); err != nil {
		return err
	}
	switch {
	case app == 0 && objects > 0:
		return fmt.Errorf("%w: an SQLite database of another program (%d schema objects, no erismount application id)", ErrNotStore, objects)
	case app != 0 && app != applicationID:
		return fmt.Errorf("%w: SQLite application id %#x, want %#x", ErrNotStore, app, applicationID)
	case version > int64(len(migrations)):
		return fmt.Errorf("%w: schema version %d, this program knows up to %d", ErrNewerSchema, version, len(migrations))
	}
	if version >= int64(upTo) {
		_, err = conn.ExecContext(ctx, "COMMIT")
		return err
	}
	if app == 0 {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return err
		}
	}
	for v := version; v < int64(upTo); v++ {
		if _, err := conn.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", upTo)); err != nil {
		return err
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	return err
}
