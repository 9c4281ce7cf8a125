// Package server is the broker's HTTP surface on BROKER_PORT: health, readiness, metrics,
// the WebSocket upgrade at /ws, the status hook, and the account routes (package api).
//
// Every response it writes itself is JSON with a stable machine-readable "error" string on
// failure; a panic in a handler becomes a 500 {"error":"internal"} and a log line, never a
// crashed process. A Server is safe for concurrent use.
package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/meshbroker/meshbroker/internal/health"
	"github.com/meshbroker/meshbroker/internal/metrics"
)

// Deps are what the routes need.
type Deps struct {
	Checker *health.Checker
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	Version string
	GitSHA  string
	// WS serves the WebSocket upgrade at /ws (nil: /ws answers 404).
	WS http.Handler
	// Hook serves POST /hook/set-status (nil: 404).
	Hook http.Handler
	// API serves the account routes under APIPrefixes (nil: 404).
	API         http.Handler
	APIPrefixes []string
}

// Server routes HTTP requests.
type Server struct {
	deps Deps
	mux  *http.ServeMux
}

// New builds the router.
func New(deps Deps) *Server {
	s := &Server{deps: deps, mux: http.NewServeMux()}
	s.handle("/health", http.MethodGet, s.handleHealth)
	s.handle("/health/ready", http.MethodGet, s.handleReady)
	s.handle("/metrics", http.MethodGet, deps.Metrics.Handler().ServeHTTP)
	if deps.WS != nil {
		// Registered as a path, so a query string does not break the match.
		s.handle("/ws", http.MethodGet, deps.WS.ServeHTTP)
	}
	if deps.Hook != nil {
		s.mux.Handle("/hook/set-status", deps.Hook)
	}
	if deps.API != nil {
		for _, p := range deps.APIPrefixes {
			s.mux.Handle(p, deps.API)
		}
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "not_found")
	})
	return s
}

// Handler returns the root handler with CORS and panic recovery around the routes.
func (s *Server) Handler() http.Handler {
	return s.recoverPanics(cors(s.mux))
}

// handle registers a path for one method; other methods get a JSON 405 (the standard mux's
// own 405 is plain text).
func (s *Server) handle(path, method string, h http.HandlerFunc) {
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed")
			return
		}
		h(w, r)
	})
}

// cors answers preflights and labels every response as the original broker did, so browser
// tools that call the HTTP routes keep working.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PATCH, DELETE")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, X-Mesh-Id, X-Member-Id, X-File-Name, X-Tags, X-Persistent, X-Target-Spec")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v) // the standard library's deliberate abort
				}
				s.deps.Logger.Error("handler panic", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				WriteError(w, http.StatusInternalServerError, "internal")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// WriteError writes {"error": code}.
func WriteError(w http.ResponseWriter, status int, code string) {
	WriteJSON(w, status, map[string]string{"error": code})
}
