package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// executeStream is what sbx's code interpreter answers for
// "print('hi')\nimport sys; print('e', file=sys.stderr)\ndisplay(png)\n1/0"
// (lines captured from the real server, images shortened).
const executeStream = `{"type":"number_of_executions","execution_count":3}
{"type":"stdout","text":"hi\n","timestamp":"2026-11-26T01:10:18.694448Z"}
{"type":"keepalive"}
{"type":"stderr","text":"e\n","timestamp":"2026-11-26T01:10:18.694999Z"}
{"is_main_result":false,"png":"iVBORw0KGgo=","text":"<Figure size 640x480 with 1 Axes>","type":"result","extra":{"application/x-custom":{"a":1}}}
{"is_main_result":true,"text":"2","type":"result"}
{"type":"error","name":"ZeroDivisionError","value":"division by zero","traceback":"Traceback...\nZeroDivisionError: division by zero"}
{"type":"end_of_execution"}
`

func TestRunCode(t *testing.T) {
	t.Parallel()
	var got map[string]any
	var hdr http.Header
	mux := http.NewServeMux()
	mux.HandleFunc("POST /execute", func(w http.ResponseWriter, r *http.Request) {
		hdr = r.Header.Clone()
		_ = json.NewDecoder(r.Body).Decode(&got)
		io.WriteString(w, executeStream)
	})
	sbx := testSandbox(newTestClient(t, mux))

	var order []string
	exec, err := sbx.RunCode(t.Context(), "code", &RunCodeOptions{
		Language: "python",
		Envs:     map[string]string{"A": "1"},
		OnStdout: func(m OutputMessage) { order = append(order, "out:"+m.Line) },
		OnStderr: func(m OutputMessage) { order = append(order, "err:"+m.Line) },
		OnResult: func(r Result) { order = append(order, "result:"+r.Text) },
		OnError:  func(e ExecutionError) { order = append(order, "error:"+e.Name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got["code"] != "code" || got["language"] != "python" || got["env_vars"].(map[string]any)["A"] != "1" || got["context_id"] != nil {
		t.Fatalf("request body %v", got)
	}
	if hdr.Get("E2b-Sandbox-Port") != "49999" || hdr.Get("E2b-Sandbox-Id") != "abc123" || hdr.Get("X-Access-Token") != "tok" {
		t.Fatalf("headers %v", hdr)
	}
	want := "out:hi\n,err:e\n,result:<Figure size 640x480 with 1 Axes>,result:2,error:ZeroDivisionError"
	if strings.Join(order, ",") != want {
		t.Fatalf("callbacks %q", order)
	}
	if exec.Text() != "2" || exec.ExecutionCount != 3 || len(exec.Logs.Stdout) != 1 || len(exec.Logs.Stderr) != 1 {
		t.Fatalf("execution %+v", exec)
	}
	if exec.Error == nil || exec.Error.Value != "division by zero" || !strings.Contains(exec.Error.Traceback, "Traceback") {
		t.Fatalf("error %+v", exec.Error)
	}
	if r := exec.Results[0]; r.PNG != "iVBORw0KGgo=" || r.IsMainResult || len(r.Extra) != 1 || len(r.Formats()) != 3 {
		t.Fatalf("display result %+v formats %v", r, r.Formats())
	}
}

func TestRunCodeFailures(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /execute", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Code string `json:"code"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		switch body.Code {
		case "404":
			http.Error(w, "Context nope not found", http.StatusNotFound)
		case "cut":
			io.WriteString(w, `{"type":"stdout","text":"partial","timestamp":""}`+"\n")
		case "garbage":
			io.WriteString(w, "not json\n")
		case "slow":
			io.WriteString(w, `{"type":"stdout","text":"started","timestamp":""}`+"\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	sbx := testSandbox(newTestClient(t, mux))
	ctx := t.Context()

	if _, err := sbx.RunCode(ctx, "404", &RunCodeOptions{ContextID: "nope"}); !IsNotFound(err) || !strings.Contains(err.Error(), "Context nope not found") {
		t.Fatalf("404: %v", err)
	}
	exec, err := sbx.RunCode(ctx, "cut", nil)
	if !errors.Is(err, ErrIncompleteExecution) || exec == nil || len(exec.Logs.Stdout) != 1 {
		t.Fatalf("cut stream: %v %+v", err, exec)
	}
	if _, err := sbx.RunCode(ctx, "garbage", nil); err == nil || !strings.Contains(err.Error(), "bad output line") {
		t.Fatalf("garbage: %v", err)
	}
	if _, err := sbx.RunCode(ctx, "slow", &RunCodeOptions{Timeout: 100 * time.Millisecond}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("run past its Timeout: %v; want ErrTimeout", err)
	}
	if _, err := sbx.RunCode(ctx, "x", &RunCodeOptions{ContextID: "a", Language: "python"}); err == nil {
		t.Fatal("Language and ContextID together accepted")
	}
}

func TestCodeContexts(t *testing.T) {
	t.Parallel()
	var calls []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /contexts", func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		_ = json.NewDecoder(r.Body).Decode(&b)
		calls = append(calls, "create:"+b["language"]+":"+b["cwd"]+":"+b["user"])
		io.WriteString(w, `{"id":"c1","language":"bash","cwd":"/tmp"}`)
	})
	mux.HandleFunc("GET /contexts", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"id":"c1","language":"bash","cwd":"/tmp"}]`)
	})
	mux.HandleFunc("POST /contexts/{id}/restart", func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, "restart:"+r.PathValue("id"))
		io.WriteString(w, "null")
	})
	mux.HandleFunc("DELETE /contexts/{id}", func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, "delete:"+r.PathValue("id"))
		io.WriteString(w, "null")
	})
	sbx := testSandbox(newTestClient(t, mux))
	ctx := context.Background()
	c, err := sbx.CreateCodeContext(ctx, &CodeContextOptions{Language: "bash", Cwd: "/tmp", User: "user"})
	if err != nil || c.ID != "c1" || c.Cwd != "/tmp" {
		t.Fatalf("create: %+v %v", c, err)
	}
	list, err := sbx.ListCodeContexts(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := sbx.RestartCodeContext(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := sbx.RemoveCodeContext(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := sbx.RemoveCodeContext(ctx, "x?y"); err == nil {
		t.Fatal("id with '?' accepted")
	}
	if strings.Join(calls, ",") != "create:bash:/tmp:user,restart:c1,delete:c1" {
		t.Fatalf("calls %v", calls)
	}
}
