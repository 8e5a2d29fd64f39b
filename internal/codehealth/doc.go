// Package codehealth holds tests that check rules the whole repository keeps,
// such as every Go package having a doc comment. It has no code of its own.
package codehealth
