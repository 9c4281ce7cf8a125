package api

// memberRoutes: filled in by the member work.
func memberRoutes() []Route { return nil }
