package config

import (
	"net"
	"path/filepath"
	"regexp"
	"strconv"
)

// API is the [api] table: where the HTTP API, metrics and dashboard are
// served.
type API struct {
	// Socket is the unix socket (mode 0660) the API is always served on.
	Socket string `toml:"socket"`
	// SocketGroup owns the socket (a name or a gid), so its members may
	// use the CLI and dashboard; empty leaves the actuator's own group.
	SocketGroup string `toml:"socket_group"`
	// Listen is an optional TCP address (host:port). It needs TokenFile:
	// without a token there is no TCP listener.
	Listen string `toml:"listen"`
	// TokenFile holds the bearer token TCP clients must send.
	TokenFile string `toml:"token_file"`
	// TLSCertFile and TLSKeyFile, together, make the TCP listener serve
	// HTTPS with that certificate (PEM, chain first) and key.
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
}

// DefaultAPISocket is where the API is served unless api.socket says
// otherwise.
const DefaultAPISocket = "/run/hotplug-actuator/api.sock"

// maxSocketPath is the longest unix socket path Linux takes (sun_path
// holds 108 bytes with the NUL), less the ".new" suffix the socket is
// made under before it is renamed into place.
const maxSocketPath = 107 - len(".new")

var groupRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9._-]{0,31}\$?$|^[0-9]+$`)

func (a *API) applyDefaults() {
	if a.Socket == "" {
		a.Socket = DefaultAPISocket
	}
}

func (a *API) validate(field func(path, format string, args ...any)) {
	if !filepath.IsAbs(a.Socket) {
		field("api.socket", "must be an absolute path, got %q", a.Socket)
	} else if len(a.Socket) > maxSocketPath {
		field("api.socket", "at most %d bytes for a unix socket, got %d", maxSocketPath, len(a.Socket))
	}
	if a.SocketGroup != "" && !groupRE.MatchString(a.SocketGroup) {
		field("api.socket_group", "must be a group name or number, got %q", a.SocketGroup)
	}
	if a.Listen != "" {
		host, port, err := net.SplitHostPort(a.Listen)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
			field("api.listen", "must be host:port with a port from 1 to 65535, e.g. 127.0.0.1:9470, got %q", a.Listen)
		} else if host != "" && net.ParseIP(host) == nil {
			field("api.listen", "host must be an IP address (or empty for all), got %q", host)
		}
		if a.TokenFile == "" {
			field("api.listen", "a TCP listener needs api.token_file (the bearer token clients must send); without a token there is no TCP listener")
		}
	}
	if a.TokenFile != "" && !filepath.IsAbs(a.TokenFile) {
		field("api.token_file", "must be an absolute path, got %q", a.TokenFile)
	}
	for _, f := range [...]struct{ key, path, other string }{
		{"api.tls_cert_file", a.TLSCertFile, a.TLSKeyFile}, {"api.tls_key_file", a.TLSKeyFile, a.TLSCertFile}} {
		switch {
		case f.path == "" && f.other != "":
			field(f.key, "needed with the other of tls_cert_file and tls_key_file (HTTPS needs both)")
		case f.path != "" && !filepath.IsAbs(f.path):
			field(f.key, "must be an absolute path, got %q", f.path)
		case f.path != "" && a.Listen == "":
			field(f.key, "TLS is for the TCP listener: set api.listen too (the unix socket is not encrypted, it needs no TLS)")
		}
	}
}
