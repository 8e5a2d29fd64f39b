package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/wrenn-dev/wrenn/internal/agent"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/runtime/firecracker"
	"github.com/wrenn-dev/wrenn/internal/version"
)

const usage = `Usage:
  wrenn-agent --register <token> --address <ip:port>   register this host, then run
  wrenn-agent                                          run with the saved credential
  wrenn-agent --address <ip:port>                      run with the saved credential, and have the
                                                       control plane reach this host at a new address
  wrenn-agent remove-capsules                          destroy every capsule on this host and
                                                       remove the agent's network (namespaces,
                                                       veths, firewall table); keeps the credential
  wrenn-agent runtime                                  print the runtime this host runs capsules
                                                       with (gvisor or firecracker), from
                                                       WRENN_RUNTIME and what the host offers
  wrenn-agent template-image <template-dir>             write <template-dir>.ext4, the disk image a
                                                       Firecracker microVM boots, from its rootfs
                                                       (what "make images" runs)
  wrenn-agent --version

Settings come from the environment (WRENN_CP_URL is required); see docs/agent.md.

Flags:
`

// run is the whole program; main only reports its error. It returns nil
// after SIGINT or SIGTERM once the agent has shut down cleanly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet(filepath.Base(args[0]), flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	token := fs.String("register", "", "registration `token` from POST /v1/hosts or POST /v1/hosts/{id}/token")
	address := fs.String("address", "", "`ip:port` where the control plane reaches this agent: required with --register; without it, replaces the registered address")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() == 1 && fs.Arg(0) == "remove-capsules" {
		return removeCapsules(ctx, getenv, stderr)
	}
	if fs.NArg() == 1 && fs.Arg(0) == "runtime" {
		rt, err := config.AgentRuntime(getenv)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, rt)
		return err
	}
	if fs.NArg() == 2 && fs.Arg(0) == "template-image" {
		suffix, err := firecracker.MakeImage(ctx, fs.Arg(1))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, filepath.Clean(fs.Arg(1))+suffix)
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, version.Version)
		return err
	}
	// Check the flags before anything touches the network: a registration
	// token is single use and should not be spent on a doomed start.
	if *token != "" && *address == "" {
		return errors.New("--register needs --address <ip:port>, the address the control plane reaches this agent on")
	}
	if *address != "" {
		if err := agent.ValidateAddress(*address); err != nil {
			return fmt.Errorf("--address: %w", err)
		}
	}

	cfg, err := config.LoadAgent(getenv)
	if err != nil {
		return err
	}
	log := config.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr)

	// A registered host's credential is checked before anything else is
	// touched, so that a start that cannot work leaves the host as it was.
	var cred agent.Credential
	if *token == "" {
		cred, err = agent.LoadCredential(cfg.Dir)
		if errors.Is(err, agent.ErrNotRegistered) {
			return fmt.Errorf("this host is not registered (no %s): register it once with `wrenn-agent --register <token> --address <ip:port>`",
				filepath.Join(cfg.Dir, agent.CredentialFile))
		}
		if err != nil {
			return err
		}
		// The credential is a secret for one control plane; sending it to
		// another because WRENN_CP_URL changed would leak it.
		if cred.CPURL != cfg.CPURL {
			return fmt.Errorf("the host was registered with %s but WRENN_CP_URL is %s: set WRENN_CP_URL back, or re-register with --register <token>",
				cred.CPURL, cfg.CPURL)
		}
	}

	// Bind before registering, for the same reason: a port already taken
	// should fail the start while the token is still unused.
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listening on WRENN_HOST_LISTEN_ADDR: %w", err)
	}
	// Serve closes the listener; this covers the early returns.
	defer func() { _ = ln.Close() }()

	// Capsules before registration too: a host that cannot run capsules
	// (runsc missing, say) should fail here, with its token still unused.
	caps, err := openCapsules(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	defer func() { _ = caps.Close() }()

	if *token != "" {
		cred, err = agent.Register(ctx, cfg, *token, *address, log)
		if errors.Is(err, agent.ErrRegistrationTokenRejected) {
			return fmt.Errorf("%w; create a new token with POST /v1/hosts/{id}/token", err)
		}
		if err != nil {
			return err
		}
	}

	srv, err := agent.NewServer(cfg, cred, caps, log)
	if err != nil {
		return err
	}
	if *token == "" && *address != "" {
		// Registration sent it already; a later start with --address
		// moves the host (the control plane records the change).
		srv.AnnounceAddress(*address)
		log.Info("announcing a new address to the control plane", "address", *address)
	}
	log.Info("wrenn-agent starting", "version", version.Version, "host_id", srv.HostID(),
		"cp_url", cfg.CPURL, "dir", cfg.Dir, "runtime", cfg.Runtime,
		"heartbeat_interval", cfg.HeartbeatInterval.String())

	// After the first signal, a second one should kill the agent at once
	// rather than wait for the graceful shutdown.
	go func() {
		<-ctx.Done()
		stop()
	}()
	if err := srv.Run(ctx, ln); err != nil {
		return err
	}
	log.Info("wrenn-agent stopped")
	return nil
}
