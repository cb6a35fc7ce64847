package blobtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sbxdev/sbx/internal/testenv"
)

// S3Server is a real S3 server for tests: SeaweedFS's `weed server -s3`
// on loopback ports, with its data in a temporary directory.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	Log       string // the server's output, for failure messages
}

// WeedBinary finds the weed binary: $SBX_WEED, else where
// scripts/build-weed.sh caches the pinned version, else weed on PATH.
func WeedBinary() (string, error) {
	if p := os.Getenv("SBX_WEED"); p != "" {
		return p, nil
	}
	if script, err := findScript(); err == nil {
		out, err := exec.Command("bash", script, "--path").Output()
		if p := strings.TrimSpace(string(out)); err == nil && isExecutable(p) {
			return p, nil
		}
	}
	return exec.LookPath("weed")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// findScript walks up from the test's directory to the repository root.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "build-weed.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/build-weed.sh not found above the test directory")
		}
		dir = parent
	}
}

// freePorts returns n distinct free loopback TCP ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// StartWeed starts a SeaweedFS server with the S3 gateway and waits until
// it answers S3 requests; it is stopped when the test ends. The test
// skips without weed, and fails under SBX_REQUIRE_INTEGRATION=1.
func StartWeed(t testing.TB) *S3Server {
	t.Helper()
	bin, err := WeedBinary()
	if err != nil {
		testenv.Skip(t, "needs SeaweedFS's weed, a real S3 server (scripts/build-weed.sh builds it once per machine; make test runs it)")
	}
	dir := t.TempDir()
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	srv := &S3Server{AccessKey: "sbxtest", SecretKey: hex.EncodeToString(key), Region: "us-east-1", Log: filepath.Join(dir, "weed.log")}
	conf, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "sbx",
		"credentials": []any{map[string]string{"accessKey": srv.AccessKey, "secretKey": srv.SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}})
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// Each bucket is a SeaweedFS collection with volumes of its own: room
	// for 100 volumes of at most 64 MiB (files grow as written, nothing
	// is preallocated). Every port explicit: weed's defaults (9333, 8080, 8888, 8333, and
	// gRPC at +10000) would collide with other tests and other users of
	// the machine. Iceberg and Lance endpoints are not needed.
	p := freePorts(t, 8)
	srv.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", p[6])
	args := []string{"server", "-dir=" + data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port=" + strconv.Itoa(p[0]), "-master.port.grpc=" + strconv.Itoa(p[1]),
		"-master.volumeSizeLimitMB=64", "-master.telemetry=false",
		"-volume.port=" + strconv.Itoa(p[2]), "-volume.port.grpc=" + strconv.Itoa(p[3]), "-volume.max=100",
		"-volume.preStopSeconds=0",
		"-filer", "-filer.port=" + strconv.Itoa(p[4]), "-filer.port.grpc=" + strconv.Itoa(p[5]),
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port=" + strconv.Itoa(p[6]), "-s3.port.grpc=" + strconv.Itoa(p[7]),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config=" + filepath.Join(dir, "s3.json"),
		"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
	}
	logf, err := os.Create(srv.Log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(srv.Log)
			t.Logf("--- weed log (tail) ---\n%s", tail(b, 6000))
		}
	})
	if err := srv.waitReady(t, exited); err != nil {
		b, _ := os.ReadFile(srv.Log)
		t.Fatalf("weed server did not serve S3: %v\n--- weed log (tail) ---\n%s", err, tail(b, 4000))
	}
	return srv
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Client returns a minio client for the server (to create buckets).
func (s *S3Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: s.Region, BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitReady polls until the S3 gateway lists buckets with our
// credentials; on a loaded 2-core machine the whole stack can take tens
// of seconds.
func (s *S3Server) waitReady(t testing.TB, exited <-chan error) error {
	c := s.Client(t)
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("weed exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, last = c.ListBuckets(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 90s: %v", last)
}

// Bucket creates a bucket with a fresh name and returns the name.
func (s *S3Server) Bucket(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "sbx-test-" + hex.EncodeToString(b)
	var err error
	// Creating the first bucket can fail while the volume layer is still
	// coming up behind a gateway that already answers.
	for range 50 {
		if err = s.Client(t).MakeBucket(t.Context(), name, minio.MakeBucketOptions{Region: s.Region}); err == nil {
			return name
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("create bucket %s: %v", name, err)
	return ""
}
