package session

import (
	"net/http"
	"strconv"
	"time"

	"github.com/meshbroker/meshbroker/internal/auth"
)

// Admission: what a socket must get past before its hello is even read. A stranger who can
// reach the port holds no key, so everything it can make the broker keep is counted here:
// the instance's sockets (MAX_CONNECTIONS_PER_INSTANCE, below the process's descriptor
// limit) and, per client IP, the sockets that have not completed a hello
// (MAX_PREAUTH_PER_IP). Both refusals happen before the upgrade, with a Retry-After.

// Rejection reasons counted in broker_connections_rejected_total besides the hello codes.
const (
	reasonInstanceFull     = "instance_full"
	reasonPreauthPerIP     = "preauth_per_ip"
	reasonHandshakeTimeout = "handshake_timeout"
	reasonNoHello          = "no_hello"
	reasonHelloRate        = "rate_limit"
)

// fullMemory is how long a mesh found at capacity is remembered (auth.Options.KnownFull).
const fullMemory = 2 * time.Second

// admitSocket counts a new socket against MaxSockets; false when the instance is full.
func (h *Hub) admitSocket() bool {
	if n := h.sockets.Add(1); h.cfg.MaxSockets > 0 && n > int64(h.cfg.MaxSockets) {
		h.sockets.Add(-1)
		return false
	}
	return true
}

func (h *Hub) releaseSocket() { h.sockets.Add(-1) }

// admitPreauth counts a socket of ip that has not completed hello; false at the IP's cap.
func (h *Hub) admitPreauth(ip string) bool {
	h.ipMu.Lock()
	defer h.ipMu.Unlock()
	if h.cfg.MaxPreauthPerIP > 0 && h.preauth[ip] >= h.cfg.MaxPreauthPerIP {
		return false
	}
	h.preauth[ip]++
	return true
}

func (h *Hub) releasePreauth(ip string) {
	h.ipMu.Lock()
	defer h.ipMu.Unlock()
	if h.preauth[ip] <= 1 {
		delete(h.preauth, ip)
		return
	}
	h.preauth[ip]--
}

// refuseUpgrade answers a socket the instance will not take, before the upgrade.
func (h *Hub) refuseUpgrade(w http.ResponseWriter, status int, reason string, retryAfter time.Duration) {
	h.metrics.ConnectionsRejected.WithLabelValues(reason).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
	w.Header().Set("Connection", "close") // the descriptor is what is scarce
	http.Error(w, `{"error":"`+reason+`"}`, status)
}

// knownFull implements auth.Options.KnownFull.
func (h *Hub) knownFull(meshID string) bool {
	h.fullMu.Lock()
	defer h.fullMu.Unlock()
	at, ok := h.fullAt[meshID]
	if ok && time.Since(at) > fullMemory {
		delete(h.fullAt, meshID)
		return false
	}
	return ok
}

// noteFull records whether a mesh was just found at capacity.
func (h *Hub) noteFull(meshID string, full bool) {
	h.fullMu.Lock()
	defer h.fullMu.Unlock()
	if !full {
		delete(h.fullAt, meshID)
		return
	}
	if len(h.fullAt) >= 1024 { // only meshes that exist and are full get here; forget old ones
		for m, at := range h.fullAt {
			if time.Since(at) > fullMemory {
				delete(h.fullAt, m)
			}
		}
	}
	h.fullAt[meshID] = time.Now()
}

func (h *Hub) helloOptions() auth.Options {
	return auth.Options{
		MaxPresencesPerMesh: int64(h.cfg.MaxPresencesPerMesh),
		RequireSessionProof: h.cfg.RequireSessionProof,
		KnownFull:           h.knownFull,
		MemberHello:         func(memberID string) bool { return h.memberHellos.Take(memberID, 1) },
	}
}
