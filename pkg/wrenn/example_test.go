package wrenn_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// A capsule's whole life: create, run a command, destroy. The client reads
// WRENN_API_KEY and WRENN_BASE_URL.
func Example() {
	ctx := context.Background()
	c, err := wrenn.New()
	if err != nil {
		log.Fatal(err)
	}
	capsule, err := c.CreateCapsule(ctx, wrenn.CapsuleSpec{Template: "minimal"})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.DestroyCapsule(ctx, capsule.ID) }()

	res, err := c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "echo hello from $(hostname)"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(res.Stdout)
}

func ExampleNew() {
	c, err := wrenn.New(
		wrenn.WithBaseURL("https://wrenn.example.com"),
		wrenn.WithAPIKey(os.Getenv("MY_WRENN_KEY")),
		wrenn.WithRetries(5),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.BaseURL())
}

func ExampleClient_CreateCapsule() {
	c, _ := wrenn.New()
	capsule, err := c.CreateCapsule(context.Background(), wrenn.CapsuleSpec{
		Template:   "minimal",
		VCPUs:      2,
		MemoryMB:   512,
		TimeoutSec: wrenn.Seconds(600), // paused after 10 idle minutes
		Envs:       map[string]string{"MODE": "test"},
		Metadata:   map[string]string{"job": "build-42"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(capsule.ID, capsule.Status)
}

// Stream runs a process with an open stdin and hands its output to
// callbacks as it comes.
func ExampleClient_Stream() {
	ctx := context.Background()
	c, _ := wrenn.New()
	p, err := c.Stream(ctx, "capsule-id", wrenn.Command{Cmd: "sort"}, wrenn.StreamHandlers{
		OnStdout: func(b []byte) { os.Stdout.Write(b) },
		OnStderr: func(b []byte) { os.Stderr.Write(b) },
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = p.SendStdin(ctx, []byte("b\na\n"))
	_ = p.CloseStdin(ctx)
	exit, err := p.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", exit.ExitCode)
}

// A long job in the background, whose output is read later.
func ExampleClient_Attach() {
	ctx := context.Background()
	c, _ := wrenn.New()
	bg, err := c.ExecBackground(ctx, "capsule-id", wrenn.Command{Cmd: "make test", Tag: "tests"})
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.Attach(ctx, "capsule-id", bg.PID, "", wrenn.StreamHandlers{
		OnStdout: func(b []byte) { os.Stdout.Write(b) },
	})
	if err != nil {
		log.Fatal(err)
	}
	exit, _ := p.Wait()
	fmt.Println("tests exited with", exit.ExitCode)
}

// Upload and Download stream: a file of any size passes through without
// being held in memory.
func ExampleClient_Upload() {
	ctx := context.Background()
	c, _ := wrenn.New()
	f, err := os.Open("dataset.tar")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	st, _ := f.Stat()
	if _, err := c.Upload(ctx, "capsule-id", "/home/user/dataset.tar", f, st.Size(), wrenn.FileOptions{}); err != nil {
		log.Fatal(err)
	}

	d, err := c.Download(ctx, "capsule-id", "/home/user/result.bin", wrenn.FileOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	out, _ := os.Create("result.bin")
	defer func() { _ = out.Close() }()
	if _, err := out.ReadFrom(d); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_CreateSnapshot() {
	ctx := context.Background()
	c, _ := wrenn.New()
	snap, err := c.CreateSnapshot(ctx, "capsule-id", "my-env", wrenn.SnapshotOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// New capsules start from the snapshot, files and processes included.
	clone, err := c.CreateCapsule(ctx, wrenn.CapsuleSpec{Template: snap.Name})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(clone.ID)
}

// API errors carry the API's code and HTTP status, and match sentinels.
func ExampleError() {
	c, _ := wrenn.New()
	_, err := c.Exec(context.Background(), "capsule-id", wrenn.Command{Cmd: "true"})
	var e *wrenn.Error
	switch {
	case errors.Is(err, wrenn.ErrNotFound):
		fmt.Println("no such capsule")
	case wrenn.IsCode(err, "capsule_not_running"):
		fmt.Println("resume it first")
	case errors.As(err, &e):
		fmt.Println(e.StatusCode, e.Code, e.Message)
	}
}
