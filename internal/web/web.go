// Package web serves the dashboard: the single-page app built from
// frontend/ into dist/ (by `make dashboard`) and embedded in wrenn-cp, or,
// for frontend development, the same files from a directory on disk.
//
// Handler serves files by name and answers every other path with
// index.html, so that the app's own routes (/capsules/<id>, /keys, …) load
// the app. It knows nothing about the API: the caller sends it only the
// GET and HEAD requests that no API route takes.
package web

import (
	"embed"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// dist is the built dashboard; in a checkout without a build it holds only
// .gitkeep.
//
//go:embed all:dist
var dist embed.FS

// Built returns the dashboard built into the binary.
func Built() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // dist is embedded; it cannot be missing
	}
	return sub
}

// Headers sent with every answer of the dashboard: scripts, styles and
// connections only from this server, no framing, no MIME sniffing.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; " +
		"base-uri 'self'; form-action 'self'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "same-origin",
	"X-Frame-Options":        "DENY",
}

// Cache policies: files under assets/ have content hashes in their names,
// so they never change; everything else (index.html above all) is checked
// again on each use.
const (
	cacheImmutable = "public, max-age=31536000, immutable"
	cacheNoCache   = "no-cache"
)

// contentTypes adds types that Go's built-in table lacks.
var contentTypes = map[string]string{
	".woff2": "font/woff2",
	".woff":  "font/woff",
	".ttf":   "font/ttf",
	".ico":   "image/x-icon",
	".map":   "application/json",
	".txt":   "text/plain; charset=utf-8",
}

// notBuilt is the answer while the dashboard has not been built.
const notBuilt = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Wrenn</title></head>
<body><h1>The dashboard is not built</h1>
<p>This wrenn-cp was built without its dashboard. Run <code>make build</code>
(it needs Node.js and npm) and start the new binary, or set
<code>WRENN_DASHBOARD_DIR</code> to a directory holding a built dashboard.</p>
<p>The API works all the same: see <a href="/openapi.yaml">/openapi.yaml</a>.</p>
</body></html>
`

// Handler returns the dashboard's handler: files from dir, or from the
// built-in copy when dir is "". It answers GET and HEAD; callers route other
// methods elsewhere. It is safe for concurrent use.
func Handler(dir string) http.Handler {
	fsys := Built()
	if dir != "" {
		fsys = os.DirFS(dir)
	}
	return handler{fsys: fsys}
}

type handler struct {
	fsys fs.FS
}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range securityHeaders {
		w.Header().Set(k, v)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// path.Clean of a rooted path never climbs above the root, and fs.FS
	// refuses names with "..", so nothing outside fsys can be named.
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name != "" && !hidden(name) {
		if h.serveFile(w, r, name) {
			return
		}
		// A missing asset is a 404, not the app: a stale page asking for a
		// script must not get HTML in its place.
		if strings.HasPrefix(name, "assets/") {
			w.Header().Set("Cache-Control", cacheNoCache)
			http.Error(w, "404 page not found", http.StatusNotFound)
			return
		}
	}
	if !h.serveFile(w, r, "index.html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", cacheNoCache)
		w.WriteHeader(http.StatusServiceUnavailable)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, notBuilt)
		}
	}
}

// hidden reports whether a name has a part starting with a dot (.gitkeep,
// editor files in a development directory): never served.
func hidden(name string) bool {
	for part := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// serveFile answers with the regular file name and reports whether there
// was one.
func (h handler) serveFile(w http.ResponseWriter, r *http.Request, name string) bool {
	f, err := h.fsys.Open(name)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	// The file systems Handler uses (embed, os.DirFS) have seekable files.
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		return false
	}
	cache := cacheNoCache
	if strings.HasPrefix(name, "assets/") {
		cache = cacheImmutable
	}
	w.Header().Set("Cache-Control", cache)
	if ct, ok := contentTypes[path.Ext(name)]; ok {
		w.Header().Set("Content-Type", ct)
	}
	http.ServeContent(w, r, name, fi.ModTime(), rs)
	return true
}
