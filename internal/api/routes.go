package api

// Routes is the API's route table: every route, how it authenticates, and whether it
// writes. docs/http-api.md documents each; the route-walk test checks every writing route
// refuses a caller without its credential.
func Routes() []Route {
	var rs []Route
	rs = append(rs, loginRoutes()...)
	rs = append(rs, inviteRoutes()...)
	rs = append(rs, meshRoutes()...)
	rs = append(rs, memberRoutes()...)
	return rs
}
