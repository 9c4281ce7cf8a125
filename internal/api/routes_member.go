package api

import "net/http"

// memberRoutes: a mesh's members and sessions (/mesh/{meshId}/*), for the mesh's admins
// and, for their own member and sessions, its members.
func memberRoutes() []Route {
	return []Route{
		{Method: http.MethodGet, Pattern: "/mesh/{meshId}/members", Auth: AuthBearer, Shape: OKFalse,
			Handler: (*API).listMembers, Doc: "the mesh's members with their live-session counts (members only)"},
		{Method: http.MethodPatch, Pattern: "/mesh/{meshId}/member/{memberId}", Auth: AuthBearer, Writes: true, Shape: OKFalse,
			Handler: (*API).patchMember, Doc: "edit a member's profile (admins; the member itself within selfEditable)"},
		{Method: http.MethodDelete, Pattern: "/mesh/{meshId}/member/{memberId}", Auth: AuthBearer, Writes: true, Shape: OKFalse,
			Handler: (*API).revokeMember, Doc: "revoke a member (admins, or the member itself): its sockets close 4002 on every instance"},
		{Method: http.MethodPatch, Pattern: "/mesh/{meshId}/settings", Auth: AuthBearer, Writes: true, Shape: OKFalse,
			Handler: (*API).patchSettings, Doc: "set which profile fields members may edit themselves (admins)"},
		{Method: http.MethodDelete, Pattern: "/mesh/{meshId}/session/{presenceId}", Auth: AuthBearer, Writes: true, Shape: OKFalse,
			Handler: (*API).kickSession, Doc: "end one session (admins, or its own member): closed 4001 kicked wherever it is"},
	}
}
