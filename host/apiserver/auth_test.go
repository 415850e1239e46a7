package apiserver

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const goodToken = "0123456789abcdef0123456789abcdef"

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"good, trailing newline", write("good", goodToken+"\n", 0o640), ""},
		{"readable by all", write("open", goodToken, 0o644), "readable by every user"},
		{"too short", write("short", "secret", 0o600), "use at least 16"},
		{"two words", write("words", goodToken+" "+goodToken, 0o600), "white space"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
		{"a directory", dir, "not a regular file"},
		{"huge", write("huge", strings.Repeat("a", 5000), 0o600), "longer than 4096"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := LoadToken(tc.path)
			if tc.wantErr == "" {
				if err != nil || !tok.matches("Bearer "+goodToken) {
					t.Fatalf("got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), goodToken) {
				t.Fatal("the error shows the token")
			}
		})
	}
}

func TestTokenGuardsEverythingButHealthAndStaticFiles(t *testing.T) {
	tok, err := NewToken(goodToken)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	h := tok.require(ok)
	tests := []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/", "", 200},
		{"GET", "/app.js", "", 200},
		{"GET", "/vendor/uplot/uPlot.iife.min.js", "", 200},
		{"GET", "/v1/vms", "", 401},
		{"GET", "/v1/vms", "Bearer wrong-token-wrong-token", 401},
		{"GET", "/v1/vms", "Basic " + goodToken, 401},
		{"GET", "/v1/vms", "Bearer " + goodToken, 200},
		{"GET", "/v1/vms", "bearer  " + goodToken + " ", 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/v1/stream", "", 401},
		{"POST", "/v1/vms/web/pause", "", 401},
		{"POST", "/v1/vms/web/pause", "Bearer " + goodToken, 200},
		{"POST", "/healthz", "", 401},
		{"GET", "/v1", "", 401},
	}
	for _, tc := range tests {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s (%q): %d, want %d", tc.method, tc.path, tc.auth, rec.Code, tc.want)
		}
		if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
		}
	}
}

func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "hpsock")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "sub", "api.sock")

	ln, err := ListenUnix(path, "1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != SocketMode || st.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want %o", st.Mode(), SocketMode)
	}
	if os.Geteuid() == 0 {
		if gid := st.Sys().(*syscall.Stat_t).Gid; gid != 1 {
			t.Errorf("socket group %d, want 1", gid)
		}
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	if _, err := ListenUnix(path, ""); err == nil || !strings.Contains(err.Error(), "another process is serving it") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket still there after Close: %v", err)
	}

	// A stale socket (a crashed actuator) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = ListenUnix(path, "")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		t.Fatalf("new socket not reachable: %v", err)
	}
	c.Close()
	ln.Close()

	// A file that is not a socket is left alone.
	os.WriteFile(path, []byte("mine"), 0o600)
	if _, err := ListenUnix(path, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file in the way: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "mine" {
		t.Fatal("the file in the way was changed")
	}
	if _, err := ListenUnix(filepath.Join(dir, "x.sock"), "no-such-group-here"); err == nil || !strings.Contains(err.Error(), "api.socket_group") {
		t.Fatalf("unknown group: %v", err)
	}
}
