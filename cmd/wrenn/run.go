package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/wrenn-dev/wrenn/internal/version"
	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// cli is one invocation: its streams, environment and global flags.
type cli struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	json    bool
	apiKey  string
	baseURL string
}

// exitError ends the program with a status and, if msg is set, a line.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError is a wrong invocation: exit status 2.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

const usage = `usage: wrenn [--json] [--api-key KEY] [--base-url URL] <command> [arguments]

Commands:
  login [--base-url URL]            store an API key (read from stdin) in the config file
  capsule create [flags]            create a capsule (--template, --vcpus, --memory, --timeout, --env K=V, --meta K=V)
  capsule ls [--status S]           list capsules
  capsule get <id>                  show a capsule
  capsule rm <id>...                destroy capsules
  capsule pause|resume <id>         pause or resume a capsule
  exec [flags] <id> -- cmd [args]   run a command, streaming its output; exits with its exit code
  ps <id>                           list the capsule's processes
  attach <id> <pid|tag>             follow a process's output (from the start) until it ends
  kill [--signal SIG] <id> <pid>    signal a process (default SIGKILL)
  shell <id>                        an interactive terminal in the capsule
  cp <src> <dst>                    copy a file: local path (or -) <-> <id>:/path
  ls <id>:/path                     list a directory in a capsule
  snapshot create <id> <name>       snapshot a capsule into a template
  snapshot ls                       list the team's snapshots
  snapshot rm <name>                delete a snapshot
  template ls                       list templates
  template build --recipe F | --image F | --from REF <name>
                                    build a template and follow its log
  port ls <id>                      list the ports something listens on in a capsule
  port url [--ttl D] <id> <port>    print a signed URL of a port that works without credentials
  port public|private <id> <port>   open a port to anyone, or close it again
  completion bash|zsh               print a shell completion script
  version                           print the version

The API key and control plane come from --api-key/--base-url, else
WRENN_API_KEY/WRENN_BASE_URL, else the file written by wrenn login
($WRENN_CONFIG, default ~/.config/wrenn/config.json).
`

// run runs the CLI with args (without the program name) and returns the
// exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	err := c.run(ctx, args)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(stderr, "wrenn: "+ee.msg)
		}
		if ee.code == 2 && ee.msg != "" {
			fmt.Fprintln(stderr, "run 'wrenn help' for usage")
		}
		return ee.code
	default:
		fmt.Fprintln(stderr, "wrenn: "+oneLine(err))
		return 1
	}
}

// oneLine renders err on one line; API errors as "message (code)".
func oneLine(err error) string {
	var e *wrenn.Error
	if errors.As(err, &e) {
		return fmt.Sprintf("%s (%s)", strings.TrimSpace(e.Message), e.Code)
	}
	s := strings.TrimPrefix(strings.TrimSpace(err.Error()), "wrenn: ")
	return strings.ReplaceAll(s, "\n", "; ")
}

func (c *cli) run(ctx context.Context, args []string) error {
	fs := c.flags("wrenn")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.StringVar(&c.apiKey, "api-key", "", "API key (default $WRENN_API_KEY)")
	fs.StringVar(&c.baseURL, "base-url", "", "control plane URL (default $WRENN_BASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return &exitError{code: 2}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(c.stdout, usage)
		return nil
	case "login":
		return c.login(ctx, rest)
	case "capsule", "capsules":
		return c.capsule(ctx, rest)
	case "exec":
		return c.exec(ctx, rest)
	case "shell":
		return c.shell(ctx, rest)
	case "cp":
		return c.cp(ctx, rest)
	case "ls":
		return c.ls(ctx, rest)
	case "snapshot", "snapshots":
		return c.snapshot(ctx, rest)
	case "template", "templates":
		return c.template(ctx, rest)
	case "ps":
		return c.ps(ctx, rest)
	case "port", "ports":
		return c.port(ctx, rest)
	case "attach":
		return c.attach(ctx, rest)
	case "kill":
		return c.kill(ctx, rest)
	case "completion":
		return c.completion(rest)
	case "version":
		fmt.Fprintln(c.stdout, "wrenn", version.Version)
		return nil
	}
	return usageError("unknown command %q", cmd)
}

// flags returns a flag set that reports errors as usage errors (exit 2)
// without printing the defaults.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args into fs, turning flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return usageError("%s: see 'wrenn help'", fs.Name())
		}
		return usageError("%s: %v", fs.Name(), err)
	}
	return nil
}

// client returns the SDK client for the flags, environment and config.
func (c *cli) client() (*wrenn.Client, error) {
	key, base := c.apiKey, c.baseURL
	if key == "" {
		key = c.getenv("WRENN_API_KEY")
	}
	if base == "" {
		base = c.getenv("WRENN_BASE_URL")
	}
	if key == "" || base == "" {
		cfg, err := loadConfig(c.getenv)
		if err != nil {
			return nil, err
		}
		if key == "" {
			key = cfg.APIKey
		}
		if base == "" {
			base = cfg.BaseURL
		}
	}
	if key == "" {
		return nil, errors.New("no API key: run 'wrenn login', or set WRENN_API_KEY")
	}
	opts := []wrenn.Option{wrenn.WithAPIKey(key), wrenn.WithGetenv(c.getenv)}
	if base != "" {
		opts = append(opts, wrenn.WithBaseURL(base))
	}
	return wrenn.New(opts...)
}

// printJSON prints v indented.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func (c *cli) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// kv collects repeated K=V flags.
type kv map[string]string

func (m kv) String() string { return "" }

func (m kv) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", s)
	}
	m[k] = v
	return nil
}

// stdinFile returns the stdin as a file when it is one (for terminals).
func (c *cli) stdinFile() (*os.File, bool) {
	f, ok := c.stdin.(*os.File)
	return f, ok
}
