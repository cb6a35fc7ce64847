package template

import "context"

// SnapshotDeleter deletes a team's sandbox snapshot by reference
// (sandbox.Manager); handled is false when the reference names none.
type SnapshotDeleter interface {
	DeleteSnapshot(ctx context.Context, teamID, ref string) (handled bool, err error)
}

// SetSnapshots makes DELETE /templates/{id} delete sandbox snapshots too:
// E2B's SDKs delete a snapshot as a template (deleteSnapshot). Call before
// serving requests.
func (s *Service) SetSnapshots(d SnapshotDeleter) { s.snapshots = d }

// deleteTemplateOrSnapshot deletes a team's sandbox snapshot named by ref,
// else its template (Delete).
func (s *Service) deleteTemplateOrSnapshot(ctx context.Context, teamID, ref string) error {
	if s.snapshots != nil {
		if handled, err := s.snapshots.DeleteSnapshot(ctx, teamID, ref); handled {
			return err
		}
	}
	return s.Delete(ctx, teamID, ref)
}
