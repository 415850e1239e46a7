package apiserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// SocketMode is the API socket's file mode: the owner and the socket's
// group may connect, nobody else.
const SocketMode = 0o660

// ListenUnix opens the API's unix socket at path with mode 0660, owned by
// group when given (a name or a number). The socket is made under a
// temporary name and renamed into place once its mode and group are set,
// so it is never reachable with looser permissions. A stale socket left
// by a crash is replaced; one another process is serving is not.
// Closing the listener removes the socket.
func ListenUnix(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		gid = g
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("api socket %s: exists and is not a socket; remove it or choose another api.socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api socket %s: another process is serving it (a second actuator?); stop it or choose another api.socket", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("api socket %s: removing the stale socket: %w", path, err)
		}
	}
	tmp := path + ".new"
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ul.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, SocketMode); err != nil {
		return fail(err)
	}
	st, err := os.Lstat(tmp)
	if err != nil {
		return fail(err)
	}
	// A service run with that group (systemd Group=) makes the socket
	// with it already; chown would need CAP_CHOWN, which a hardened unit
	// does not grant.
	if gid >= 0 && st.Sys().(*syscall.Stat_t).Gid != uint32(gid) {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("setting group %s: %w (run the service with Group=%s, or give it CAP_CHOWN)", group, err, group))
		}
		if st, err = os.Lstat(tmp); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ul, path: path, file: st}, nil
}

// unixListener removes its socket file when first closed, if the file is
// still its own (not a socket a later actuator made at the same path).
type unixListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
	once sync.Once
	err  error
}

func (l *unixListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		if st, err := os.Lstat(l.path); err == nil && os.SameFile(st, l.file) {
			if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) && l.err == nil {
				l.err = err
			}
		}
	})
	return l.err
}

func lookupGroup(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("api.socket_group: %w", err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("api.socket_group: group %s has gid %q", group, g.Gid)
	}
	return n, nil
}
