package cache

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestEpisodeFlapping: a failure that comes and goes gives one line when
// it starts and one when it first ends, not a pair per flap; failures are
// counted in the end line.
func TestEpisodeFlapping(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var e episode
	if e.ok(log, "works again") {
		t.Error("ok without a failure reports an episode")
	}
	for range 3 {
		e.fail(log, slog.LevelWarn, "fails")
	}
	if !e.ok(log, "works again") {
		t.Error("ok after failures reports no episode")
	}
	for range 50 { // flapping
		e.fail(log, slog.LevelWarn, "fails")
		e.fail(log, slog.LevelWarn, "fails")
		if !e.ok(log, "works again") {
			t.Error("ok after a flap reports no episode")
		}
	}
	out := buf.String()
	if n := strings.Count(out, `msg=fails`); n != 1 {
		t.Errorf("%d failure lines; want 1:\n%s", n, out)
	}
	if n := strings.Count(out, `msg="works again" failures=3`); n != 1 || strings.Count(out, "works again") != 1 {
		t.Errorf("want one end line counting 3 failures:\n%s", out)
	}
}
