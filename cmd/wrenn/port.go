package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// port serves `wrenn port`: list a capsule's ports, make one public or
// private, and hand out a signed access URL.
func (c *cli) port(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("port: want ls, url, public or private")
	}
	fs := c.flags("port " + args[0])
	c.jsonFlag(fs)
	ttl := time.Duration(0)
	if args[0] == "url" {
		fs.DurationVar(&ttl, "ttl", 0, "how long the URL works (default 1h, at most 168h)")
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	want := 2
	if args[0] == "ls" || args[0] == "list" {
		want = 1
	}
	if fs.NArg() != want {
		if want == 1 {
			return usageError("port ls: want a capsule id")
		}
		return usageError("port %s: want a capsule id and a port", args[0])
	}
	id := fs.Arg(0)
	port := 0
	if want == 2 {
		n, err := strconv.Atoi(fs.Arg(1))
		if err != nil || n < 1 || n > 65535 {
			return usageError("port %s: %q is not a port (1-65535)", args[0], fs.Arg(1))
		}
		port = n
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	switch args[0] {
	case "ls", "list":
		ports, err := cl.Ports(ctx, id)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(ports)
		}
		rows := make([][]string, 0, len(ports))
		for _, p := range ports {
			rows = append(rows, []string{strconv.Itoa(p.Port), yesNo(p.Listening), yesNo(p.Public), strings.Join(p.Addresses, ","), p.URL})
		}
		return c.table([]string{"PORT", "LISTENING", "PUBLIC", "ADDRESSES", "URL"}, rows)
	case "url":
		a, err := cl.PortURL(ctx, id, port, ttl)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(a)
		}
		fmt.Fprintln(c.stdout, a.URL)
		return nil
	case "public", "private":
		p, err := cl.SetPortPublic(ctx, id, port, args[0] == "public")
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(p)
		}
		fmt.Fprintln(c.stdout, p.URL)
		return nil
	}
	return usageError("port: unknown command %q (ls, url, public, private)", args[0])
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
