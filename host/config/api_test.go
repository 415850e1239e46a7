package config

import (
	"strings"
	"testing"
)

func TestAPIDefaultsAndKeys(t *testing.T) {
	cfg, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API != (API{Socket: DefaultAPISocket}) {
		t.Fatalf("no [api] table: %+v, want the default socket and no TCP", cfg.API)
	}
	cfg, err = Parse(good + `
[api]
socket = "/run/hp/api.sock"
socket_group = "hotplug"
listen = "127.0.0.1:9470"
token_file = "/etc/hotplug-actuator/api.token"
`)
	if err != nil {
		t.Fatal(err)
	}
	want := API{Socket: "/run/hp/api.sock", SocketGroup: "hotplug", Listen: "127.0.0.1:9470", TokenFile: "/etc/hotplug-actuator/api.token"}
	if cfg.API != want {
		t.Fatalf("api: %+v, want %+v", cfg.API, want)
	}
}

func TestAPIErrorsNameTheKey(t *testing.T) {
	tests := []struct{ name, table, want string }{
		{"TCP without a token", "listen = \"0.0.0.0:9470\"", "api.listen: a TCP listener needs api.token_file"},
		{"no port", "listen = \"127.0.0.1\"\ntoken_file = \"/t\"", "api.listen: must be host:port"},
		{"port out of range", "listen = \":70000\"\ntoken_file = \"/t\"", "api.listen: must be host:port"},
		{"host name", "listen = \"example.com:9470\"\ntoken_file = \"/t\"", "api.listen: host must be an IP address"},
		{"relative socket", "socket = \"api.sock\"", "api.socket: must be an absolute path"},
		{"socket path too long", "socket = \"/" + strings.Repeat("a", 110) + "\"", "api.socket: at most 103 bytes"},
		{"bad group", "socket_group = \"wheel; rm\"", "api.socket_group: must be a group name or number"},
		{"relative token file", "listen = \":9470\"\ntoken_file = \"token\"", "api.token_file: must be an absolute path"},
		{"unknown key", "port = 9470", "api.port"},
		{"cert without key", "listen = \":9470\"\ntoken_file = \"/t\"\ntls_cert_file = \"/c.pem\"", "api.tls_key_file: needed with the other"},
		{"key without cert", "listen = \":9470\"\ntoken_file = \"/t\"\ntls_key_file = \"/k.pem\"", "api.tls_cert_file: needed with the other"},
		{"relative cert", "listen = \":9470\"\ntoken_file = \"/t\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k.pem\"", "api.tls_cert_file: must be an absolute path"},
		{"TLS without TCP", "tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"", "api.tls_cert_file: TLS is for the TCP listener"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(good + "\n[api]\n" + tc.table + "\n")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{"socket_group = \"123\"", "listen = \":9470\"\ntoken_file = \"/t\"", "listen = \"[::1]:9470\"\ntoken_file = \"/t\"",
		"listen = \":9470\"\ntoken_file = \"/t\"\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\""} {
		if _, err := Parse(good + "\n[api]\n" + ok + "\n"); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}
