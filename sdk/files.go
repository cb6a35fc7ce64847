package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Files reads and writes a sandbox's filesystem: content through envd's
// /files endpoint, everything else through its filesystem service. Relative
// paths are resolved against the user's home directory.
type Files struct {
	sbx  *Sandbox
	user string
}

// As returns a Files that acts as the given Linux user (e.g. "root").
func (f *Files) As(user string) *Files { return &Files{sbx: f.sbx, user: user} }

// FileType is the kind of a filesystem entry.
type FileType string

// File types reported in EntryInfo.Type.
const (
	FileTypeFile    FileType = "file"
	FileTypeDir     FileType = "dir"
	FileTypeSymlink FileType = "symlink"
)

// EntryInfo describes a file or directory in the sandbox.
type EntryInfo struct {
	Name          string
	Type          FileType
	Path          string // absolute
	Size          int64
	Mode          uint32 // permission and type bits, as in stat(2)
	Permissions   string // e.g. "-rw-r--r--"
	Owner         string
	Group         string
	ModifiedTime  time.Time
	SymlinkTarget string
	Metadata      map[string]string
}

// entryJSON is envd's EntryInfo in ProtoJSON form.
type entryJSON struct {
	Name          string            `json:"name"`
	Type          string            `json:"type"`
	Path          string            `json:"path"`
	Size          protoInt64        `json:"size"`
	Mode          uint32            `json:"mode"`
	Permissions   string            `json:"permissions"`
	Owner         string            `json:"owner"`
	Group         string            `json:"group"`
	ModifiedTime  time.Time         `json:"modifiedTime"`
	SymlinkTarget string            `json:"symlinkTarget"`
	Metadata      map[string]string `json:"metadata"`
}

func (e entryJSON) info() EntryInfo {
	t := FileType("")
	switch e.Type {
	case "FILE_TYPE_FILE":
		t = FileTypeFile
	case "FILE_TYPE_DIRECTORY":
		t = FileTypeDir
	case "FILE_TYPE_SYMLINK":
		t = FileTypeSymlink
	}
	return EntryInfo{
		Name: e.Name, Type: t, Path: e.Path, Size: int64(e.Size), Mode: e.Mode,
		Permissions: e.Permissions, Owner: e.Owner, Group: e.Group,
		ModifiedTime: e.ModifiedTime, SymlinkTarget: e.SymlinkTarget, Metadata: e.Metadata,
	}
}

// protoInt64 accepts ProtoJSON's int64 encodings: a JSON string or number.
type protoInt64 int64

func (p *protoInt64) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(s)
	}
	if string(b) == "null" {
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("invalid int64 %s: %w", b, err)
	}
	*p = protoInt64(n)
	return nil
}

func (f *Files) opts() callOptions { return callOptions{user: f.user} }

func (f *Files) filesQuery(path string) string {
	q := url.Values{}
	q.Set("path", path)
	if f.user != "" {
		q.Set("username", f.user)
	}
	return q.Encode()
}

// Open streams a file's content. The caller must close the reader.
func (f *Files) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	if path == "" {
		return nil, fmt.Errorf("read file: empty path")
	}
	req, err := f.sbx.newRequest(ctx, http.MethodGet, EnvdPort, "/files", f.filesQuery(path), nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	resp, err := f.sbx.client.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("read %s: %w", path, dataPlaneError(resp))
	}
	return resp.Body, nil
}

// Read returns a file's content.
func (f *Files) Read(ctx context.Context, path string) ([]byte, error) {
	rc, err := f.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// WriteInfo describes a file written by Write.
type WriteInfo struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// Write creates or replaces a file (and its parent directories).
func (f *Files) Write(ctx context.Context, path string, data []byte) (*WriteInfo, error) {
	return f.WriteFrom(ctx, path, bytes.NewReader(data))
}

// WriteFrom creates or replaces a file with the content of r, streamed as a
// multipart upload (the form every envd version accepts).
func (f *Files) WriteFrom(ctx context.Context, path string, r io.Reader) (*WriteInfo, error) {
	if path == "" {
		return nil, fmt.Errorf("write file: empty path")
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", path)
		if err == nil {
			_, err = io.Copy(part, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := f.sbx.newRequest(ctx, http.MethodPost, EnvdPort, "/files", f.filesQuery(path), pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := f.sbx.client.http.Do(req)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("write %s: %w", path, dataPlaneError(resp))
	}
	var out []WriteInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, int64(f.sbx.client.maxMessage))).Decode(&out); err != nil {
		return nil, fmt.Errorf("write %s: decode response: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("write %s: server reported no written file", path)
	}
	return &out[0], nil
}

// ListDirOptions are the options of Files.List.
type ListDirOptions struct {
	// Depth 1 (or 0) lists the directory's direct entries; larger depths
	// descend into subdirectories.
	Depth int
}

// List lists a directory.
func (f *Files) List(ctx context.Context, path string, opts ListDirOptions) ([]EntryInfo, error) {
	depth := opts.Depth
	if depth < 0 {
		return nil, fmt.Errorf("list %s: depth must be at least 1, got %d", path, depth)
	}
	if depth == 0 {
		depth = 1
	}
	req := struct {
		Path  string `json:"path"`
		Depth int    `json:"depth"`
	}{path, depth}
	var resp struct {
		Entries []entryJSON `json:"entries"`
	}
	if err := f.sbx.unary(ctx, "filesystem.Filesystem/ListDir", req, &resp, f.opts()); err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	out := make([]EntryInfo, 0, len(resp.Entries))
	for _, e := range resp.Entries {
		out = append(out, e.info())
	}
	return out, nil
}

// Stat describes a file or directory.
func (f *Files) Stat(ctx context.Context, path string) (*EntryInfo, error) {
	var resp struct {
		Entry entryJSON `json:"entry"`
	}
	if err := f.sbx.unary(ctx, "filesystem.Filesystem/Stat", struct {
		Path string `json:"path"`
	}{path}, &resp, f.opts()); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	info := resp.Entry.info()
	return &info, nil
}

// Exists reports whether path exists.
func (f *Files) Exists(ctx context.Context, path string) (bool, error) {
	_, err := f.Stat(ctx, path)
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// MakeDir creates a directory and its parents. It returns false (and no
// error) if the directory already exists.
func (f *Files) MakeDir(ctx context.Context, path string) (bool, error) {
	err := f.sbx.unary(ctx, "filesystem.Filesystem/MakeDir", struct {
		Path string `json:"path"`
	}{path}, nil, f.opts())
	if IsConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("make directory %s: %w", path, err)
	}
	return true, nil
}

// Remove deletes a file or a directory with its content.
func (f *Files) Remove(ctx context.Context, path string) error {
	if err := f.sbx.unary(ctx, "filesystem.Filesystem/Remove", struct {
		Path string `json:"path"`
	}{path}, nil, f.opts()); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Rename moves a file or directory and describes it at its new path.
func (f *Files) Rename(ctx context.Context, oldPath, newPath string) (*EntryInfo, error) {
	req := struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	}{oldPath, newPath}
	var resp struct {
		Entry entryJSON `json:"entry"`
	}
	if err := f.sbx.unary(ctx, "filesystem.Filesystem/Move", req, &resp, f.opts()); err != nil {
		return nil, fmt.Errorf("rename %s to %s: %w", oldPath, newPath, err)
	}
	info := resp.Entry.info()
	return &info, nil
}
