// Package buildinfo says which build of the broker is running: a version string and the git
// commit, reported by `broker version`, /health and /health/ready.
package buildinfo

import (
	"os"
	"runtime/debug"
)

// Version is the broker's release version. Release builds set it with
// -ldflags "-X github.com/meshbroker/meshbroker/internal/buildinfo.Version=v1.2.3".
var Version = "0.1.0-dev"

// gitSHA may be set with -ldflags "-X ...buildinfo.gitSHA=abc1234"; see GitSHA.
var gitSHA = ""

// GitSHA returns the commit the binary was built from: the GIT_SHA environment variable
// (what the original broker read, and what Fly deployments set), else the linker-set value,
// else the VCS stamp Go embeds in the binary, else "unknown".
func GitSHA() string {
	if v := os.Getenv("GIT_SHA"); v != "" {
		return v
	}
	if gitSHA != "" {
		return gitSHA
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				if len(s.Value) > 12 {
					return s.Value[:12]
				}
				return s.Value
			}
		}
	}
	return "unknown"
}
