package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestRunVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"envd", "--version"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) == "" {
		t.Error("no version printed")
	}
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	for _, args := range [][]string{
		{"--port", "70000"},
		{"--buffer-size", "1000"},
		{"--keepalive", "0s"},
		{"--no-such-flag"},
		{"extra-argument"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"envd"}, args...), func(string) string { return "" }, &out, &out)
		if err == nil {
			t.Errorf("run %v: no error", args)
		}
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"envd", "--addr", "127.0.0.1", "--port", "0"}, func(string) string { return "" }, &out, &out)
	}()
	for !strings.Contains(out.String(), "envd listening") {
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v\n%s", err, out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v, want nil after the context ends", err)
	}
}
