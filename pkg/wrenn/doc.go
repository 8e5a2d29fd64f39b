// Package wrenn is the Go client of Wrenn's REST API: it creates capsules
// (isolated sandboxes), runs commands in them, moves files in and out,
// pauses, resumes, snapshots and destroys them.
//
// A [Client] is configured by options or, by default, by the environment:
// WRENN_API_KEY (sent as X-API-Key) and WRENN_BASE_URL (the control plane's
// root URL, default http://localhost:8000). Every call takes a context.
//
//	c, err := wrenn.New()
//	capsule, err := c.CreateCapsule(ctx, wrenn.CapsuleSpec{Template: "minimal"})
//	res, err := c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "echo hello"})
//	fmt.Print(res.Stdout)
//	err = c.DestroyCapsule(ctx, capsule.ID)
//
// Errors the API answers are *[Error] values carrying the API's error code
// and HTTP status; errors.Is matches them against [ErrNotFound],
// [ErrConflict], [ErrUnauthenticated] and the other sentinels by status.
//
// Retries: GET requests (idempotent) are retried, with a short backoff, when
// the connection fails or the server answers 503; nothing else is retried,
// because a create, exec or write that failed midway may have happened.
//
// A Client is safe for concurrent use.
package wrenn
