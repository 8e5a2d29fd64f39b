package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// config is what wrenn login stores.
type config struct {
	BaseURL string `json:"base_url,omitempty"`
	APIKey  string `json:"api_key"`
}

// configPath returns $WRENN_CONFIG, else $XDG_CONFIG_HOME/wrenn/config.json,
// else ~/.config/wrenn/config.json.
func configPath(getenv func(string) string) (string, error) {
	if p := getenv("WRENN_CONFIG"); p != "" {
		return p, nil
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "wrenn", "config.json"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("no home directory: set WRENN_CONFIG")
	}
	return filepath.Join(home, ".config", "wrenn", "config.json"), nil
}

// loadConfig reads the config file; a missing one is an empty config.
func loadConfig(getenv func(string) string) (config, error) {
	var cfg config
	p, err := configPath(getenv)
	if err != nil {
		return cfg, nil //nolint:nilerr // no home: nothing stored
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", p, err)
	}
	return cfg, nil
}

// saveConfig writes the config file with mode 0600 (its directory 0700),
// replacing any old one atomically.
func saveConfig(getenv func(string) string, cfg config) (string, error) {
	p, err := configPath(getenv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("making config directory: %w", err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".config-*.json")
	if err != nil {
		return "", fmt.Errorf("writing config: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return "", fmt.Errorf("writing config: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return "", fmt.Errorf("writing config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing config: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("writing config: %w", err)
	}
	return p, nil
}

// login reads an API key from stdin (or --api-key), checks it against the
// control plane and stores it.
func (c *cli) login(ctx context.Context, args []string) error {
	fs := c.flags("login")
	base := fs.String("base-url", c.baseURL, "control plane URL")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("login takes no arguments; it reads the API key from stdin")
	}
	if *base == "" {
		*base = c.getenv("WRENN_BASE_URL")
	}
	if *base == "" {
		*base = wrenn.DefaultBaseURL
	}
	key := c.apiKey
	if key == "" {
		if f, ok := c.stdinFile(); ok && isTerminal(f) {
			// Echo goes off before the prompt shows: a key typed or
			// pasted as soon as the prompt appears is never echoed.
			if restore, err := noEcho(f); err == nil {
				defer fmt.Fprintln(c.stderr)
				defer restore()
				fmt.Fprint(c.stderr, "API key (wrn_…, not echoed): ")
			} else {
				fmt.Fprint(c.stderr, "API key (wrn_…): ")
			}
		}
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		if err != nil && line == "" {
			return errors.New("no API key on stdin")
		}
		key = strings.TrimSpace(line)
	}
	if key == "" {
		return errors.New("no API key given")
	}
	cl, err := wrenn.New(wrenn.WithAPIKey(key), wrenn.WithBaseURL(*base))
	if err != nil {
		return err
	}
	if _, err := cl.ListTemplates(ctx); err != nil {
		return fmt.Errorf("checking the key against %s: %w", *base, err)
	}
	p, err := saveConfig(c.getenv, config{BaseURL: cl.BaseURL(), APIKey: key})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "logged in to %s; key stored in %s\n", cl.BaseURL(), p)
	return nil
}
