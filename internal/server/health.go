package server

import (
	"net/http"
)

// healthBody is GET /health: liveness, always 200 while the process serves.
type healthBody struct {
	Status  string `json:"status"`
	DB      string `json:"db"`
	Version string `json:"version"`
	GitSHA  string `json:"gitSha"`
	Uptime  int64  `json:"uptime"`
}

// readyBody is GET /health/ready.
type readyBody struct {
	Status    string `json:"status"`
	Reason    string `json:"reason,omitempty"`
	Version   string `json:"version"`
	GitSHA    string `json:"gitSha"`
	Uptime    int64  `json:"uptime"`
	Migration int64  `json:"migration"`
	Expected  int64  `json:"expected,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	db := "down"
	if s.deps.Checker.DBUp(r.Context()) {
		db = "up"
	}
	WriteJSON(w, http.StatusOK, healthBody{
		Status: "ok", DB: db, Version: s.deps.Version, GitSHA: s.deps.GitSHA,
		Uptime: int64(s.deps.Checker.Uptime().Seconds()),
	})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	rd := s.deps.Checker.Ready(r.Context())
	body := readyBody{
		Status: "ready", Version: s.deps.Version, GitSHA: s.deps.GitSHA,
		Uptime: int64(s.deps.Checker.Uptime().Seconds()), Migration: rd.Migration, Expected: rd.Expected,
	}
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
		body.Status, body.Reason, body.Error = "not_ready", rd.Reason, rd.Detail
	}
	WriteJSON(w, status, body)
}
