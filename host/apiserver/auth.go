package apiserver

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// MinTokenLen is the shortest bearer token accepted.
const MinTokenLen = 16

// Token is the bearer token TCP clients must present. Only its SHA-256
// is kept, and requests are compared on hashes in constant time, so
// neither the token's bytes nor its length leak through timing.
type Token struct {
	sum [sha256.Size]byte
}

// LoadToken reads a token file: one line, at least MinTokenLen
// characters, not readable by every user.
func LoadToken(path string) (*Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("token file %s: not a regular file", path)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("token file %s: readable by every user (mode %04o); run chmod o-rwx on it", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	if len(b) > 4096 {
		return nil, fmt.Errorf("token file %s: longer than 4096 bytes; it should hold one token", path)
	}
	return NewToken(string(bytes.TrimSpace(b)))
}

// NewToken wraps a token; surrounding white space is not part of it.
func NewToken(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	if len(s) < MinTokenLen {
		return nil, fmt.Errorf("token is %d characters; use at least %d (e.g. openssl rand -hex 32)", len(s), MinTokenLen)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return nil, errors.New("token must be one word without white space")
	}
	return &Token{sum: sha256.Sum256([]byte(s))}, nil
}

// matches reports whether an Authorization header carries the token.
func (t *Token) matches(header string) bool {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(header[len(scheme):])))
	return subtle.ConstantTimeCompare(got[:], t.sum[:]) == 1
}

// public says which requests need no token: the health check and the
// dashboard's static files, which hold no data (the page asks for the
// token before it calls the API).
func public(r *http.Request) bool {
	p := r.URL.Path
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return p == "/healthz" || p == "/" || p == "/index.html" || p == "/favicon.ico" ||
		strings.HasPrefix(p, "/app.") || strings.HasPrefix(p, "/vendor/")
}

// require wraps h so that every non-public request needs the token.
func (t *Token) require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !public(r) && !t.matches(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hotplug-actuator"`)
			// A peer without the token keeps no connection open.
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusUnauthorized, "", "missing or wrong bearer token (send Authorization: Bearer TOKEN, the token in the actuator's api.token_file)")
			return
		}
		h.ServeHTTP(w, r)
	})
}
