package cachetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"erismount/cache"
	"erismount/cache/cachetest"
	"erismount/eris"
	"erismount/eris/eristest"
)

// brokenEnv names the broken store TestBroken runs the suite against.
const brokenEnv = "CACHETEST_BROKEN"

// mapStore is a minimal correct store; broken variants change one thing.
type mapStore struct {
	mu      sync.Mutex
	m       map[eris.Ref][]byte
	puts    int
	alias   bool // GetBlock returns the stored slice itself
	retain  bool // PutBlock keeps the caller's slice
	plain   bool // missing blocks give a plain error
	dropper bool // every 7th put is lost
}

func (s *mapStore) GetBlock(_ context.Context, ref eris.Ref) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[ref]
	switch {
	case !ok && s.plain:
		return nil, errors.New("nope")
	case !ok:
		return nil, eris.NotFound(ref)
	case s.alias:
		return b, nil
	}
	return append([]byte(nil), b...), nil
}

func (s *mapStore) PutBlock(_ context.Context, ref eris.Ref, b []byte) error {
	if !eris.ValidBlockSize(len(b)) {
		return eris.ErrCorrupt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.puts++; s.dropper && s.puts%7 == 0 {
		return nil
	}
	if !s.retain {
		b = append([]byte(nil), b...)
	}
	s.m[ref] = b
	return nil
}

// TestBroken is the child of TestSuiteCatches.
func TestBroken(t *testing.T) {
	kind := os.Getenv(brokenEnv)
	if kind == "" {
		t.Skip("runs only as a child of TestSuiteCatches, with " + brokenEnv + " set")
	}
	cachetest.Run(t, func(t *testing.T) eris.BlockStore {
		s := &mapStore{m: make(map[eris.Ref][]byte)}
		switch kind {
		case "alias":
			s.alias = true
		case "retain":
			s.retain = true
		case "plain":
			s.plain = true
		case "dropper":
			s.dropper = true
		case "anysize":
			return eristest.NewStore() // stores blocks of any size
		}
		return s
	}, cachetest.Options{})
}

// TestSuiteCatches shows that the suite fails stores that break the
// contract, each for the right reason: a suite that cannot fail proves
// nothing.
func TestSuiteCatches(t *testing.T) {
	tests := []struct {
		kind, fails, says string
	}{
		{"alias", "CallerOwnsResult", "differ from the"},
		{"retain", "PutDoesNotRetain", "differ from the"},
		{"plain", "Missing", "want an error matching eris.ErrNotFound"},
		{"dropper", "Many", "GetBlock("},
		{"anysize", "BadSize", "ERIS blocks are 1024 or 32768 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBroken$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.kind)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("the suite passed a store that breaks the contract (%v):\n%s", err, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestBroken/"+tc.fails) || !strings.Contains(string(out), tc.says) {
				t.Errorf("want subtest %s to fail saying %q; output:\n%s", tc.fails, tc.says, out)
			}
		})
	}
}

// TestSuitePasses runs the suite against a correct store, the minimal one
// the broken ones are made from, and against cache.Memory.
func TestSuitePasses(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) eris.BlockStore { return &mapStore{m: make(map[eris.Ref][]byte)} }, cachetest.Options{})
	cachetest.Run(t, func(t *testing.T) eris.BlockStore { return cache.NewMemory(64 << 20) }, cachetest.Options{})
}

func TestBlock(t *testing.T) {
	r1, b1 := cachetest.Block(1, eris.BlockSize1K)
	r2, b2 := cachetest.Block(1, eris.BlockSize1K)
	r3, _ := cachetest.Block(2, eris.BlockSize1K)
	r4, b4 := cachetest.Block(1, eris.BlockSize32K)
	switch {
	case r1 != r2 || string(b1) != string(b2):
		t.Error("Block is not deterministic")
	case r1 == r3 || r1 == r4:
		t.Error("different seeds or sizes give the same block")
	case len(b4) != eris.BlockSize32K || r4.Verify(b4) != nil:
		t.Error("Block(1, 32768) is not a 32 KiB block under its reference")
	}
}
