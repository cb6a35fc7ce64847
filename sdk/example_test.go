package sdk_test

// These examples need a running server (`sbx serve` and `eval "$(sbx env)"`),
// so they have no Output comments: `go test` compiles them but does not run them.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

func Example() {
	ctx := context.Background()
	client, err := sdk.NewClient(sdk.ConfigFromEnv())
	if err != nil {
		log.Fatal(err)
	}
	sbx, err := client.Create(ctx, sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer sbx.Kill(context.WithoutCancel(ctx))

	res, err := sbx.Commands.Run(ctx, "echo hello from $(hostname)", sdk.RunOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(res.Stdout)
}

func ExampleCommands_Run_exitCode() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	sbx, _ := client.Create(ctx, sdk.CreateOptions{})
	defer sbx.Kill(ctx)

	res, err := sbx.Commands.Run(ctx, "ls /nonexistent", sdk.RunOptions{
		OnStderr: func(chunk string) { fmt.Fprint(os.Stderr, chunk) },
	})
	var exitErr *sdk.CommandExitError
	switch {
	case errors.As(err, &exitErr):
		fmt.Println("exit code", exitErr.ExitCode) // res is complete too
	case err != nil:
		log.Fatal(err) // the command could not run at all
	default:
		fmt.Print(res.Stdout)
	}
}

func ExampleCommands_Start() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	sbx, _ := client.Create(ctx, sdk.CreateOptions{})
	defer sbx.Kill(ctx)

	h, err := sbx.Commands.Start(ctx, "cat", sdk.RunOptions{Stdin: true})
	if err != nil {
		log.Fatal(err)
	}
	_ = h.SendStdin(ctx, "hello\n")
	_ = h.CloseStdin(ctx)
	res, err := h.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(res.Stdout) // hello
}

func ExampleFiles() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	sbx, _ := client.Create(ctx, sdk.CreateOptions{})
	defer sbx.Kill(ctx)

	if _, err := sbx.Files.Write(ctx, "notes/todo.txt", []byte("write tests\n")); err != nil {
		log.Fatal(err)
	}
	entries, _ := sbx.Files.List(ctx, "notes", sdk.ListDirOptions{Depth: 1})
	for _, e := range entries {
		fmt.Println(e.Path, e.Size)
	}
	data, _ := sbx.Files.As("root").Read(ctx, "/home/user/notes/todo.txt")
	fmt.Print(string(data))
}

func ExampleClient_List() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	running, err := client.List(ctx, sdk.ListOptions{
		Metadata: map[string]string{"owner": "alice"},
		State:    []string{sdk.StateRunning},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range running {
		fmt.Println(s.SandboxID, s.TemplateID, s.EndAt)
	}
}

func ExampleIsNotFound() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	if err := client.Kill(ctx, "doesnotexist"); sdk.IsNotFound(err) {
		fmt.Println("already gone")
	}
}

func ExamplePty_Create() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	sbx, _ := client.Create(ctx, sdk.CreateOptions{})
	defer sbx.Kill(ctx)

	term, err := sbx.Pty.Create(ctx, sdk.PtyOptions{Cols: 120, Rows: 40, OnData: func(b []byte) { os.Stdout.Write(b) }})
	if err != nil {
		log.Fatal(err)
	}
	_ = sbx.Pty.SendInput(ctx, term.PID, []byte("ls -la; exit\n"))
	_, _ = term.Wait(ctx)
}

func ExampleFiles_Watch() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	sbx, _ := client.Create(ctx, sdk.CreateOptions{})
	defer sbx.Kill(ctx)

	w, err := sbx.Files.Watch(ctx, "/home/user", func(e sdk.FilesystemEvent) {
		fmt.Println(e.Type, e.Name)
	}, sdk.WatchOptions{Recursive: true})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Stop()
	_, _ = sbx.Files.Write(ctx, "/home/user/hello.txt", []byte("hi"))
}

func ExampleFiles_DownloadURL() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	sbx, _ := client.Create(ctx, sdk.CreateOptions{})
	// Anyone with the URL can download the file for an hour; no key needed.
	u, err := sbx.Files.DownloadURL("/home/user/report.csv", sdk.FileURLOptions{Expires: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u)
}

func ExampleClient_BuildTemplate() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	_, err := client.BuildTemplate(ctx, sdk.TemplateBuildOptions{
		Name:     "with-curl",
		Steps:    []sdk.TemplateStep{{Type: "RUN", Args: []string{"apt-get install -y curl", "root"}}},
		StartCmd: "python3 -m http.server 8000",
		ReadyCmd: "curl -sf localhost:8000",
		OnLog:    func(e sdk.BuildLogEntry) { fmt.Println(e.Message) },
	})
	var be *sdk.BuildError
	if errors.As(err, &be) {
		log.Fatalf("step %s failed: %s", be.Step, be.Message)
	}
}

func Example_sentinelErrors() {
	ctx := context.Background()
	client, _ := sdk.NewClient(sdk.ConfigFromEnv())
	_, err := client.Get(ctx, "0a1b2c3d4e5f")
	switch {
	case errors.Is(err, sdk.ErrNotFound):
		fmt.Println("no such sandbox")
	case errors.Is(err, sdk.ErrUnauthorized):
		fmt.Println("check E2B_API_KEY")
	}
}
