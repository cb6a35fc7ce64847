// Package dashboard serves sbx's live dashboard: one HTML page with its
// script and style embedded in the binary (no CDN). The page itself needs
// no key; it asks for the API key, keeps it in the browser's localStorage
// and sends it as X-API-Key with every data call, so it only ever shows the
// key's team. The sandbox table and event feed are pushed from
// GET /events/stream (read with fetch, since EventSource cannot send
// headers); charts come from /analytics/timeseries.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Public is where routes without an API key go (*api.Server).
type Public interface {
	AddPublic(pattern string, h http.Handler)
}

// Handler serves /dashboard (the page) and /dashboard/<asset>.
func Handler() http.Handler {
	sub, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/dashboard/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page is small and changes with the binary: no stale caches.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
		if r.URL.Path == "/dashboard" || r.URL.Path == "/dashboard/" {
			b, _ := assets.ReadFile("assets/index.html")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(b)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// Register adds the dashboard routes to p.
func Register(p Public) {
	h := Handler()
	p.AddPublic("GET /dashboard", h)
	p.AddPublic("GET /dashboard/", h)
}
