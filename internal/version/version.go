// Package version holds the build's version string, set by the Makefile
// through -ldflags.
package version

// Version is the release or commit the binary was built from.
var Version = "dev"
