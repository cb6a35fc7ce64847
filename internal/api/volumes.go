package api

import (
	"context"
	"net/http"
	"path"
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/volume"
)

// Volumes is the team volumes service (volume.Service).
type Volumes interface {
	Create(ctx context.Context, teamID, name string) (volume.Volume, error)
	Get(ctx context.Context, teamID, ref string) (volume.Volume, error)
	List(ctx context.Context, teamID string) ([]volume.Volume, error)
	Delete(ctx context.Context, teamID, ref string) error
}

// VolumeMounter gives the host directory of a volume to bind into a
// sandbox (volume.Service, where the images are: one box, a node).
type VolumeMounter interface {
	MountSource(ctx context.Context, teamID, ref string) (volume.Volume, string, error)
}

// ContentRoutes registers the /volumecontent routes (volume.ContentHandler
// where the images are; cluster.Volumes, which forwards them, on an api
// replica).
type ContentRoutes interface {
	Register(mux interface {
		HandleFunc(string, func(http.ResponseWriter, *http.Request))
	})
}

// SetVolumes serves /volumes (API key) and /volumecontent (the volume's
// token), and mounts volumes named in a create body's volumeMounts.
func (s *Server) SetVolumes(v Volumes, content ContentRoutes) {
	s.volumes = v
	s.mux.HandleFunc("GET /volumes", s.listVolumes)
	s.mux.HandleFunc("POST /volumes", s.createVolume)
	s.mux.HandleFunc("GET /volumes/{id}", s.getVolume)
	s.mux.HandleFunc("DELETE /volumes/{id}", s.deleteVolume)
	content.Register(s.public)
}

type volumeJSON struct {
	VolumeID string `json:"volumeID"`
	Name     string `json:"name"`
}

// volumeAndToken is E2B's VolumeAndToken. domain tells the SDK where the
// content API is (https://api.<domain>); E2B_VOLUME_API_URL overrides it.
type volumeAndToken struct {
	VolumeID string  `json:"volumeID"`
	Name     string  `json:"name"`
	Token    string  `json:"token"`
	Domain   *string `json:"domain,omitempty"`
}

func (s *Server) withToken(v volume.Volume) volumeAndToken {
	return volumeAndToken{VolumeID: v.ID, Name: v.Name, Token: v.Token, Domain: s.domain()}
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name string `json:"name"`
	}
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.volumes.Create(r.Context(), team(r).ID, body.Name)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.withToken(v))
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) {
	v, err := s.volumes.Get(r.Context(), team(r).ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.withToken(v))
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) {
	list, err := s.volumes.List(r.Context(), team(r).ID)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]volumeJSON, 0, len(list))
	for _, v := range list {
		out = append(out, volumeJSON{VolumeID: v.ID, Name: v.Name})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) {
	if err := s.volumes.Delete(r.Context(), team(r).ID, r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// volumeMount is E2B's SandboxVolumeMount.
type volumeMount struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// maxVolumeMounts bounds a create body's volumeMounts.
const maxVolumeMounts = 16

// mountsFor resolves a create body's volumeMounts to the team's volumes.
func (s *Server) mountsFor(ctx context.Context, teamID string, vms []volumeMount) ([]runtime.Mount, error) {
	if len(vms) == 0 {
		return nil, nil
	}
	if s.volumes == nil {
		return nil, errdefs.Precondition("volumeMounts: this server keeps no volumes")
	}
	m, ok := s.volumes.(VolumeMounter)
	if !ok {
		return nil, errdefs.Precondition("volumeMounts: this server keeps no volume images")
	}
	paths, err := mountPaths(vms)
	if err != nil {
		return nil, err
	}
	out := make([]runtime.Mount, 0, len(vms))
	for i, vm := range vms {
		_, src, err := m.MountSource(ctx, teamID, vm.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, runtime.Mount{Source: src, Target: paths[i], IDMapped: true})
	}
	return out, nil
}

// mountPaths checks a create body's volumeMounts paths and returns them
// cleaned.
func mountPaths(vms []volumeMount) ([]string, error) {
	if len(vms) > maxVolumeMounts {
		return nil, errdefs.Invalid("volumeMounts: at most %d", maxVolumeMounts)
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(vms))
	for _, vm := range vms {
		p := path.Clean(vm.Path)
		if !strings.HasPrefix(vm.Path, "/") || p == "/" || len(p) > 1024 || strings.HasPrefix(p, "/.sbx") ||
			strings.HasPrefix(p, "/proc") || strings.HasPrefix(p, "/sys") || strings.HasPrefix(p, "/dev") || seen[p] {
			return nil, errdefs.Invalid("volumeMounts path %q: want a distinct absolute path such as /mnt/data (not /, /proc, /sys, /dev or /.sbx)", vm.Path)
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}
