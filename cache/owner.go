package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// owner identifies the process holding a mount pin, precisely enough that a
// later process can tell whether it still runs: a PID alone is reused, so
// the kernel's start time of that PID and the boot it belongs to are kept
// too. The text form is stored in pins.owner.
type owner struct {
	boot  string // /proc/sys/kernel/random/boot_id, "" if unknown
	pid   int
	start uint64 // field 22 of /proc/PID/stat (clock ticks after boot), 0 if unknown
	n     uint64 // random: distinguishes mount pins of one process
}

// selfOwner returns a new owner for a mount pin of this process.
func selfOwner() owner {
	o := owner{boot: bootID(), pid: os.Getpid(), n: rand.Uint64()}
	o.start, _ = procStart(o.pid)
	return o
}

func (o owner) String() string {
	return fmt.Sprintf("pid=%d start=%d boot=%s n=%d", o.pid, o.start, o.boot, o.n)
}

// parseOwner reads the String form.
func parseOwner(s string) (owner, error) {
	var o owner
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return o, fmt.Errorf("owner %q: field %q is not key=value", s, f)
		}
		var err error
		switch k {
		case "pid":
			o.pid, err = strconv.Atoi(v)
		case "start":
			o.start, err = strconv.ParseUint(v, 10, 64)
		case "boot":
			o.boot = v
		case "n":
			o.n, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return o, fmt.Errorf("owner %q: %s: %w", s, k, err)
		}
	}
	if o.pid <= 0 {
		return o, fmt.Errorf("owner %q: no pid", s)
	}
	return o, nil
}

// alive reports whether the process that created o may still be running.
// When in doubt it says yes: keeping a stale pin costs space, dropping a
// live one can evict a mounted root.
func (o owner) alive() bool {
	if b := bootID(); b != "" && o.boot != "" && b != o.boot {
		return false // created before the last reboot
	}
	start, err := procStart(o.pid)
	switch {
	case err == nil:
		return o.start == 0 || start == o.start // else the PID was reused
	case errors.Is(err, fs.ErrNotExist) && procMounted():
		return false
	}
	// No /proc: ask the kernel whether the PID exists at all.
	err = syscall.Kill(o.pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// procStart returns the start time of pid (proc(5), /proc/PID/stat field 22).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Field 2 is the command in parentheses and may hold spaces or
	// parentheses itself: count fields after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
