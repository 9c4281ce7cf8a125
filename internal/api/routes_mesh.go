package api

import "net/http"

// meshRoutes: meshes a user owns or belongs to (/cli/mesh/*, /cli/meshes).
func meshRoutes() []Route {
	return []Route{
		{Method: http.MethodPost, Pattern: "/cli/mesh/create", Auth: AuthBearer, Writes: true, Shape: Plain,
			Handler: (*API).createMesh, Doc: "create a mesh owned by the caller, with the caller's first (admin) member"},
		{Method: http.MethodGet, Pattern: "/cli/meshes", Auth: AuthBearer, Shape: Plain,
			Handler: (*API).listMeshes, Doc: "the caller's live meshes"},
		{Method: http.MethodPost, Pattern: "/cli/mesh/{slug}/grants", Auth: AuthBearer, Writes: true, Shape: Plain,
			Handler: (*API).setGrants, Doc: "merge per-sender grants into the caller's members of the mesh"},
		{Method: http.MethodDelete, Pattern: "/cli/mesh/{slug}", Auth: AuthBearer, Writes: true, Shape: Plain,
			Handler: (*API).deleteMesh, Doc: "archive a mesh (owner only); its sockets close on every instance"},
		{Method: http.MethodGet, Pattern: "/cli/mesh/{slug}/permissions", Auth: AuthBearer, Shape: Plain,
			Handler: (*API).getPermissions, Doc: "every member's effective permissions (members only)"},
		{Method: http.MethodPost, Pattern: "/cli/mesh/{slug}/permissions", Auth: AuthBearer, Writes: true, Shape: Plain,
			Handler: (*API).setPermissions, Doc: "set one member's permissions (canManagePermissions only)"},
	}
}
