package api

import "net/http"

// loginRoutes are device-code login, bearer tokens and /cli-sync (docs/http-api.md "Login,
// tokens and sessions").
func loginRoutes() []Route {
	return []Route{
		{Method: http.MethodPost, Pattern: "/cli/device-code", Auth: AuthNone, Writes: true, Shape: Plain, IPLimited: true,
			Handler: (*API).createDeviceCode, Doc: "start a device-code login (open to anyone, bounded per IP and globally)"},
		{Method: http.MethodGet, Pattern: "/cli/device-code/{code}", Auth: AuthDeviceCode, Writes: true, Shape: Plain,
			Handler: (*API).pollDeviceCode, Doc: "poll a device code; collects the bearer once it is approved (single use)"},
		{Method: http.MethodPost, Pattern: "/cli/device-code/{code}/approve", Auth: AuthApprover, Writes: true, Shape: Plain,
			Handler: (*API).approveDeviceCode, Doc: "approve a device code for a user (the web app, or a bearer of that user)"},
		{Method: http.MethodPost, Pattern: "/cli/token", Auth: AuthApprover, Writes: true, Shape: Plain,
			Handler: (*API).createToken, Doc: "mint a bearer for a user (the web app, or a bearer of that user)"},
		{Method: http.MethodGet, Pattern: "/cli/sessions", Auth: AuthBearer, Shape: Plain,
			Handler: (*API).listSessions, Doc: "list the caller's unrevoked bearer tokens"},
		{Method: http.MethodPost, Pattern: "/cli/session/revoke", Auth: AuthBodyToken, Writes: true, Shape: Plain,
			Handler: (*API).revokeSession, Doc: "revoke a bearer given in the body, or one of the caller's own by id"},
		{Method: http.MethodPost, Pattern: "/cli-sync", Auth: AuthSyncJWT, Writes: true, Shape: OKFalse, IPLimited: true,
			Handler: (*API).cliSync, Doc: "join the meshes a web-app-signed sync token lists, with one key"},
	}
}
