package cluster

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/volume"
)

// VolumeRepo is what an api replica reads of volumes: the shared
// database's rows (sqlstore.Volumes), which nodes write.
type VolumeRepo interface {
	Get(ctx context.Context, teamID, ref string) (volume.Volume, error)
	ByID(ctx context.Context, id string) (volume.Volume, error)
	List(ctx context.Context, teamID string) ([]volume.Volume, error)
}

// Volumes is an api replica's team volumes. A volume is an ext4 image in
// one node's data dir (volume.Volume.NodeID): a create is placed on a
// node and sent there, reads come from the database, a delete and every
// /volumecontent request go to the volume's node, and sandboxes that
// mount it are placed on that node (api.Server.createOnNode). Volumes do
// not move between nodes: when a volume's node is gone, so is its data.
type Volumes struct {
	repo   VolumeRepo
	sbs    *Sandboxes // nodes, placer and client
	signer *Signer
	tr     http.RoundTripper
	log    *slog.Logger
}

// NewVolumes returns the api replica's volumes.
func NewVolumes(repo VolumeRepo, sbs *Sandboxes, signer *Signer, log *slog.Logger) *Volumes {
	return &Volumes{repo: repo, sbs: sbs, signer: signer, tr: NodeTransport(), log: log}
}

// volumeAnswer is the node's answer to POST /volumes (E2B's VolumeAndToken).
type volumeAnswer struct {
	VolumeID string `json:"volumeID"`
	Name     string `json:"name"`
	Token    string `json:"token"`
}

// errNoRetry stops Placer.Run at a node's answer: only an unreachable
// node is worth another (a taken name or the team's limit is the same
// everywhere).
var errNoRetry = errors.New("not retried")

// Create places the volume on a node, as a small sandbox would be
// placed (the sandboxes that mount it go there too), and makes it there.
func (v *Volumes) Create(ctx context.Context, teamID, name string) (volume.Volume, error) {
	preq := placement.Request{Team: teamID, TemplateID: "volume " + name, CPUMillis: 1, MemoryMiB: 1}
	var out volumeAnswer
	var final error
	d, err := v.sbs.placer.Run(ctx, preq, CreateAttempts, func(ctx context.Context, d placement.Decision) error {
		base, err := v.sbs.nodes.URL(ctx, d.NodeID)
		if err != nil {
			return err
		}
		_, err = v.sbs.client.Do(ctx, d.NodeID, base, teamID, http.MethodPost, "/volumes", map[string]string{"name": name}, &out)
		if err != nil && !errors.Is(err, errdefs.ErrUnavailable) {
			final = err
			return errNoRetry
		}
		return err
	})
	if errors.Is(err, errNoRetry) {
		return volume.Volume{}, final
	}
	if err != nil {
		return volume.Volume{}, err
	}
	vol, err := v.repo.ByID(ctx, out.VolumeID)
	if err != nil {
		return volume.Volume{}, fmt.Errorf("read volume %s created on node %s: %w", out.VolumeID, d.NodeID, err)
	}
	return vol, nil
}

// Get reads one of the team's volumes.
func (v *Volumes) Get(ctx context.Context, teamID, ref string) (volume.Volume, error) {
	return v.repo.Get(ctx, teamID, ref)
}

// List reads the team's volumes.
func (v *Volumes) List(ctx context.Context, teamID string) ([]volume.Volume, error) {
	return v.repo.List(ctx, teamID)
}

// Delete asks the volume's node to delete it (row and image).
func (v *Volumes) Delete(ctx context.Context, teamID, ref string) error {
	vol, err := v.repo.Get(ctx, teamID, ref)
	if err != nil {
		return err
	}
	base, err := v.nodeURL(ctx, vol)
	if err != nil {
		return err
	}
	_, err = v.sbs.client.Do(ctx, vol.NodeID, base, teamID, http.MethodDelete, "/volumes/"+url.PathEscape(vol.ID), nil, nil)
	return err
}

// DeleteTeam deletes every volume of a team on its node (the team is
// being deleted).
func (v *Volumes) DeleteTeam(ctx context.Context, teamID string) error {
	vols, err := v.repo.List(ctx, teamID)
	if err != nil {
		return fmt.Errorf("list volumes of team %s: %w", teamID, err)
	}
	var errs []error
	for _, vol := range vols {
		if err := v.Delete(ctx, teamID, vol.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete volume %s of team %s: %w", vol.Name, teamID, err))
		}
	}
	return errors.Join(errs...)
}

func (v *Volumes) nodeURL(ctx context.Context, vol volume.Volume) (string, error) {
	if vol.NodeID == "" {
		return "", errdefs.Precondition("volume %s was made by a single server (sbx serve --role all), not on a cluster node: no node holds it", vol.Name)
	}
	base, err := v.sbs.nodes.URL(ctx, vol.NodeID)
	if err != nil {
		return "", errdefs.Unavailable("volume %s is kept on a node that is not available: its data stays there, volumes do not move between nodes", vol.Name)
	}
	return base, nil
}

// Register serves /volumecontent on the api replica's public routes (the
// volume's token authorizes them, not an API key): each request goes, as
// the client sent it, to the node that holds the volume.
func (v *Volumes) Register(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("/volumecontent/{id}/{op}", v.forwardContent)
}

// contentOps are the last segments of the content API's routes
// (volume.ContentHandler).
var contentOps = map[string]bool{"dir": true, "path": true, "file": true}

// forwardContent checks the volume's token here too, so strangers'
// requests stop at the api replica, then forwards to its node signed for
// the volume's team; the node checks the token again.
func (v *Volumes) forwardContent(w http.ResponseWriter, r *http.Request) {
	id, op := r.PathValue("id"), r.PathValue("op")
	if !contentOps[op] {
		errdefs.WriteHTTP(w, v.log, errdefs.NotFound("no such volume content endpoint: %s", op))
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	denied := errdefs.Unauthenticated("volume %q: send its token (from GET /volumes/{id}) as Authorization: Bearer <token>", id)
	if tok == "" || !strings.HasPrefix(id, volume.IDPrefix) {
		errdefs.WriteHTTP(w, v.log, denied)
		return
	}
	vol, err := v.repo.ByID(r.Context(), id)
	if errors.Is(err, errdefs.ErrNotFound) || err == nil && subtle.ConstantTimeCompare([]byte(vol.Token), []byte(tok)) != 1 {
		errdefs.WriteHTTP(w, v.log, denied)
		return
	}
	if err != nil {
		errdefs.WriteHTTP(w, v.log, err)
		return
	}
	base, err := v.nodeURL(r.Context(), vol)
	if err != nil {
		errdefs.WriteHTTP(w, v.log, err)
		return
	}
	target, err := url.Parse(base)
	if err != nil {
		errdefs.WriteHTTP(w, v.log, err)
		return
	}
	rp := &httputil.ReverseProxy{
		Transport:     v.tr,
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(v.log.Handler(), slog.LevelDebug),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = target.Scheme, target.Host, target.Host
			// The path is rebuilt from what was checked, never passed on
			// as sent: the node acts for the volume's team, so a path
			// that led anywhere else there would give a token holder the
			// team's API.
			pr.Out.URL.Path, pr.Out.URL.RawPath = "/volumecontent/"+url.PathEscape(vol.ID)+"/"+op, ""
			// The volume's token stays (the node checks it); nothing
			// else of the client's may speak for it at the node.
			for _, h := range []string{"X-API-Key", "X-Team-ID", Header, SandboxIDHeader, SandboxPortHeader} {
				pr.Out.Header.Del(h)
			}
			if err := v.signer.Sign(pr.Out, vol.NodeID, vol.TeamID); err != nil {
				v.log.Error("sign a forwarded volume request", "err", err)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			errdefs.WriteHTTP(w, v.log, errdefs.Unavailable("the node of volume %s did not answer: %v", vol.Name, err))
		},
	}
	rp.ServeHTTP(w, r)
}
