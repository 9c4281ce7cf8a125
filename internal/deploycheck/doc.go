// Package deploycheck holds no code, only tests that the files operators read — fly.toml,
// the README, .ci/run — agree with the code: ports, limits, timeouts, the migration pin, and
// every environment variable documented.
package deploycheck
