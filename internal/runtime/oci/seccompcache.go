package oci

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// crun compiles the seccomp profile with libseccomp at every start (~6 ms
// for Docker's profile), although every sandbox of a driver has the same
// one. It keeps the compiled filter in the container's state dir
// (seccomp.bpf, for exec), and takes a compiled filter instead of the
// profile through the run.oci.seccomp_bpf_data annotation (base64; crun
// then ignores the profile). The driver compiles once through crun's own
// first start and hands the result to every later start.
//
// The filter depends only on the profile, the crun binary and its
// libseccomp, all fixed for a driver's life. The state dir is the driver's
// own (0700, host only): no sandbox can change what is read from it.
const annotationSeccompBPF = "run.oci.seccomp_bpf_data"

// bpfCache holds crun's compiled filter of the driver's profile.
type bpfCache struct {
	mu   sync.Mutex
	data string // base64; "" until a first start compiled it
}

// annotate adds the compiled filter to a crun config, if there is one yet,
// and leaves the profile out: crun applies the filter of the annotation
// when it is there (and the profile is not needed to), and the profile is
// four fifths of a config.json that crun parses twice per start (in the
// parent and in its detached child) and copies into its state dir.
func (c *bpfCache) annotate(spec *specs.Spec) {
	c.mu.Lock()
	data := c.data
	c.mu.Unlock()
	if data == "" {
		return
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[annotationSeccompBPF] = data
	if spec.Linux != nil {
		spec.Linux.Seccomp = nil
	}
}

// learn keeps the filter crun compiled for the container whose state is in
// dir, unless one is kept already.
func (c *bpfCache) learn(dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, "seccomp.bpf"))
	// A classic BPF program: 8-byte instructions, at most 4096 of them.
	if err != nil || len(b) == 0 || len(b)%8 != 0 || len(b) > 4096*8 {
		return
	}
	c.data = base64.StdEncoding.EncodeToString(b)
}
