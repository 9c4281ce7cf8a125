// Package deploycheck holds no code, only tests that the files operators read — fly.toml,
// the README, .ci/run — agree with the code: ports, limits, timeouts, the migration pin, and
// every environment variable documented; and that the repository stands alone: no tracked
// file reaches outside it (a clone with nothing beside it builds and passes its tests).
package deploycheck
