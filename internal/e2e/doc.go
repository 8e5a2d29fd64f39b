// Package e2e holds Wrenn's end-to-end tests: they build the real binaries,
// run them as processes against a real PostgreSQL, and drive them the way a
// user does, through the REST API and the command line. The tests are in
// package e2e_test; this file only documents the package.
package e2e
