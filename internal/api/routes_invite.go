package api

// inviteRoutes are the invite routes: joining with a v1 token, claiming a v2 code, and the
// owner making an invite. docs/http-api.md "Invites and joining" documents each.
func inviteRoutes() []Route {
	return []Route{
		{Method: "POST", Pattern: "/join", Auth: AuthInvite, Writes: true, Shape: OKFalse, IPLimited: true,
			Handler: inviteJoin, Doc: "join a mesh with a signed v1 invite token (one use; re-joining with a member key costs none)"},
		{Method: "POST", Pattern: "/invites/{code}/claim", Auth: AuthInvite, Writes: true, Shape: Plain, IPLimited: true,
			Handler: inviteClaim, Doc: "claim a v2 invite code: join with an ed25519 key, get the root key sealed to an x25519 key (BROKER_INVITE_V2_ENABLED=1)"},
		{Method: "POST", Pattern: "/cli/mesh/{slug}/invite", Auth: AuthBearer, Writes: true, Shape: Plain,
			Handler: inviteCreate, Doc: "the mesh owner creates a one-use invite valid for 7 days"},
		{Method: "GET", Pattern: "/cli/mesh/{slug}/invites", Auth: AuthBearer, Shape: Plain,
			Handler: inviteList, Doc: "the mesh owner lists its invites (never their tokens)"},
		{Method: "DELETE", Pattern: "/cli/mesh/{slug}/invite/{invite}", Auth: AuthBearer, Writes: true, Shape: Plain,
			Handler: inviteRevoke, Doc: "the mesh owner revokes an invite by id or code"},
	}
}
