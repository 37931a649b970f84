package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"erismount/fusefs"
)

// Erismount runs the erismount command as a user would.
type Erismount struct {
	Bin string
	// Env is the command's environment (a private XDG_CACHE_HOME, so the
	// user's block store is never touched).
	Env []string
	// MountArgs are extra flags for mount (--deadline, --readahead).
	MountArgs []string
	// LogDir, if set, makes Mount run erismount -v in the foreground with
	// its log in a new file there (a background mount's log is lost once
	// the command returns), and wait until the tree is mounted.
	LogDir string
	logs   int
}

// Mount runs "erismount --json mount URN DIR --peer PEER --store STORE
// --foreground=false", which returns once the tree is mounted, and
// returns the pid of the process serving the mount.
func (e *Erismount) Mount(ctx context.Context, urn, dir, peer, store string) (int, error) {
	if e.LogDir != "" {
		return e.mountLogged(ctx, urn, dir, peer, store)
	}
	args := append([]string{"--json", "mount", urn, dir, "--peer", peer, "--store", store, "--foreground=false"}, e.MountArgs...)
	cmd := exec.CommandContext(ctx, e.Bin, args...)
	cmd.Env = e.Env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("erismount mount: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var m struct{ PID int }
	if err := json.Unmarshal(out, &m); err != nil || m.PID <= 0 {
		return 0, fmt.Errorf("erismount mount printed %q, want JSON with the pid: %v", out, err)
	}
	return m.PID, nil
}

// mountLogged runs "erismount -v mount … --foreground" with its log in a
// file of LogDir, and returns once the tree answers at dir.
func (e *Erismount) mountLogged(ctx context.Context, urn, dir, peer, store string) (int, error) {
	e.logs++
	logPath := filepath.Join(e.LogDir, fmt.Sprintf("mount-%03d.log", e.logs))
	f, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	args := append([]string{"-v", "mount", urn, dir, "--peer", peer, "--store", store}, e.MountArgs...)
	cmd := exec.Command(e.Bin, args...)
	cmd.Env = e.Env
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	for {
		var st unix.Statfs_t
		if fusefs.IsMountPoint(dir) && unix.Statfs(dir, &st) == nil {
			return pid, nil
		}
		var ws unix.WaitStatus
		if got, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got == pid {
			return 0, fmt.Errorf("erismount mount exited (%v) before mounting; see %s", ws, logPath)
		}
		if ctx.Err() != nil {
			cmd.Process.Kill()
			waitExit(pid, time.Minute)
			return 0, ctx.Err()
		}
		time.Sleep(time.Millisecond)
	}
}

// Unmount unmounts dir and waits until the process pid that served it
// has exited (so its block store is closed and may be opened again).
func (e *Erismount) Unmount(dir string, pid int) error {
	for i := 0; ; i++ {
		err := unix.Unmount(dir, 0)
		if errors.Is(err, unix.EPERM) { // not root: as a user unmounts
			if out, ferr := exec.Command("fusermount3", "-u", dir).CombinedOutput(); ferr != nil {
				err = fmt.Errorf("%w; fusermount3 -u: %v: %s", err, ferr, bytes.TrimSpace(out))
			} else {
				err = nil
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) || i == 100 {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return waitExit(pid, time.Minute)
}

// waitExit waits for the process pid to end. The benchmark is a child
// subreaper (see becomeSubreaper), so a background erismount becomes its
// child when the command that started it returns, and is reaped here; a
// process that is not our child is polled.
func waitExit(pid int, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case got == pid:
			if ws.Exited() && ws.ExitStatus() != 0 {
				return fmt.Errorf("erismount (pid %d) exited with status %d", pid, ws.ExitStatus())
			}
			return nil
		case errors.Is(err, unix.ECHILD):
			if unix.Kill(pid, 0) == unix.ESRCH {
				return nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("erismount (pid %d) still running %v after its unmount", pid, timeout)
}

// becomeSubreaper makes orphaned descendants (the background erismount
// processes) children of this process, so it can wait for them.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// dropCaches writes back dirty pages and drops the kernel's page, dentry
// and inode caches (root only).
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}
