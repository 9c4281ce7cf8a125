package connlimit

import (
	"net"
	"net/http"
)

// ClientIP is the address a request comes from, for per-IP limits: Fly-Client-IP when the
// proxy in front is trusted (TRUST_PROXY_HEADERS=1; anyone can send the header otherwise),
// else the socket's peer. An IPv6 address is reduced to its /64, the block one host gets.
func ClientIP(r *http.Request, trustProxy bool) string {
	if trustProxy {
		if h := r.Header.Get("Fly-Client-IP"); net.ParseIP(h) != nil {
			return IPKey(h)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return IPKey(host)
}
