package apiserver

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// The dashboard's files, uPlot included (assets/vendor/uplot, see its
// README for the version): our users' hosts are often offline, so nothing
// is fetched from elsewhere.
//
//go:embed assets
var assets embed.FS

// contentSecurityPolicy allows the page only its own files and its own
// API: a data value rendered by mistake as HTML still could not run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func dashboard() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, "/v1/") || p == "/v1" {
			writeError(w, http.StatusNotFound, "", "no endpoint "+r.Method+" "+clip(p)+" (see docs/api.md)")
			return
		}
		if p != "/" && strings.HasSuffix(p, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
