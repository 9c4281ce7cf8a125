// Package admin provisions meshes and members without the web app: what `broker admin`
// runs. Every function validates its input first and returns an *InputError for bad input
// (the command exits 2 with its message) and a wrapped error for anything else.
package admin

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/notifier"
)

// InputError is bad input from the operator.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

func inputErr(format string, a ...any) error { return &InputError{Msg: fmt.Sprintf(format, a...)} }

var (
	nonSlug   = regexp.MustCompile(`[^a-z0-9]+`)
	pubkeyHex = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// Slugify derives a slug from a mesh name as the original did: lower case, each run of
// characters outside [a-z0-9] becomes one dash, dashes trimmed.
func Slugify(name string) string {
	return strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(name), "-"), "-")
}

// MeshCreated is the result of CreateMesh.
type MeshCreated struct {
	MeshID string `json:"meshId"`
	Slug   string `json:"slug"`
}

// CreateMesh creates a mesh with a fresh invite-signing keypair and root key. The slug is
// the name's, suffixed -2, -3 … up to -100 when a live mesh already has it.
func CreateMesh(ctx context.Context, q *db.Queries, name string) (MeshCreated, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return MeshCreated{}, inputErr("--name is required")
	}
	if len(name) > MaxMeshNameBytes {
		return MeshCreated{}, inputErr("--name is longer than %d characters", MaxMeshNameBytes)
	}
	m, err := NewMesh(ctx, q, name, Slugify(name), nil)
	if errors.Is(err, ErrSlugsTaken) {
		return MeshCreated{}, inputErr("%s: %q", err.Error(), name)
	}
	if err != nil {
		return MeshCreated{}, err
	}
	return MeshCreated{MeshID: m.ID, Slug: m.Slug}, nil
}

// MaxMeshNameBytes bounds a mesh's name.
const MaxMeshNameBytes = 200

// ErrSlugsTaken: the slug and its suffixes -2 … -100 all belong to live meshes.
var ErrSlugsTaken = errors.New("too many meshes with this name")

// NewMesh inserts a mesh named name, with a fresh invite-signing keypair and root key,
// owned by ownerUserID (nil: no web account). Its slug is base ("mesh" if empty), or
// base-2, base-3 … up to base-100, the first no live mesh has (ErrSlugsTaken beyond). It
// never fails on a taken slug, so it can run inside a caller's transaction.
func NewMesh(ctx context.Context, q *db.Queries, name, base string, ownerUserID *string) (db.Mesh, error) {
	if base == "" {
		base = "mesh"
	}
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return db.Mesh{}, fmt.Errorf("generate owner key: %w", err)
	}
	root := make([]byte, 32)
	_, _ = rand.Read(root)
	ownerPub, ownerSec, rootKey := hex.EncodeToString(pub), hex.EncodeToString(sec), base64.RawURLEncoding.EncodeToString(root)
	for n := 1; n <= 100; n++ {
		slug := base
		if n > 1 {
			slug = base + "-" + strconv.Itoa(n)
		}
		m, err := q.InsertMeshIfSlugFree(ctx, db.InsertMeshIfSlugFreeParams{
			ID: ids.New(), Name: name, Slug: slug, OwnerUserID: ownerUserID,
			OwnerPubkey: &ownerPub, OwnerSecretKey: &ownerSec, RootKey: &rootKey,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			continue // a live mesh has this slug
		}
		if err != nil {
			return db.Mesh{}, fmt.Errorf("insert mesh: %w", err)
		}
		return m, nil
	}
	return db.Mesh{}, fmt.Errorf("%w (%s to %s-100 are taken)", ErrSlugsTaken, base, base)
}

// MemberAdded is the result of AddMember.
type MemberAdded struct {
	MemberID string `json:"memberId"`
}

// AddMember adds a member identity (an ed25519 public key) to a mesh.
func AddMember(ctx context.Context, q *db.Queries, meshID, pubkey, name, role string) (MemberAdded, error) {
	switch {
	case meshID == "":
		return MemberAdded{}, inputErr("--mesh is required")
	case !pubkeyHex.MatchString(pubkey):
		return MemberAdded{}, inputErr("--pubkey must be an ed25519 public key: 64 hex characters")
	case strings.TrimSpace(name) == "":
		return MemberAdded{}, inputErr("--name is required")
	case role != "member" && role != "admin":
		return MemberAdded{}, inputErr("--role must be member or admin, not %q", role)
	}
	mesh, err := q.GetMesh(ctx, meshID)
	if errors.Is(err, pgx.ErrNoRows) {
		return MemberAdded{}, inputErr("no mesh with id %q", meshID)
	}
	if err != nil {
		return MemberAdded{}, fmt.Errorf("look up mesh: %w", err)
	}
	if mesh.ArchivedAt != nil {
		return MemberAdded{}, inputErr("mesh %q is archived", meshID)
	}
	m, err := q.InsertMember(ctx, db.InsertMemberParams{
		ID: ids.New(), MeshID: meshID, PeerPubkey: strings.ToLower(pubkey),
		DisplayName: strings.TrimSpace(name), Role: role,
	})
	if isUniqueViolation(err, "members_mesh_pubkey_live_key") {
		return MemberAdded{}, inputErr("mesh %q already has a member with this pubkey", meshID)
	}
	if err != nil {
		return MemberAdded{}, fmt.Errorf("insert member: %w", err)
	}
	return MemberAdded{MemberID: m.ID}, nil
}

// MemberRevoked is the result of RevokeMember.
type MemberRevoked struct {
	MemberID string `json:"memberId"`
	Revoked  bool   `json:"revoked"`
}

// RevokeMember revokes a member: its next hello is refused with unauthorized, and the
// instances holding its open sockets close them (4002 revoked) and end their presences
// when the revocation commits, in one transaction with its member_revoked audit event (on
// conn, a pool or a transaction). actorID is the member acting ("" for the operator).
func RevokeMember(ctx context.Context, conn Beginner, meshID, memberID, actorID string) (res MemberRevoked, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		res, err = revokeMember(ctx, db.New(tx), meshID, memberID, actorID)
		return err
	})
	return res, err
}

// Beginner starts a transaction: a pool, a connection or a transaction (a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func revokeMember(ctx context.Context, q *db.Queries, meshID, memberID, actorID string) (MemberRevoked, error) {
	if meshID == "" || memberID == "" {
		return MemberRevoked{}, inputErr("--mesh and --member are required")
	}
	row, err := q.RevokeMemberOf(ctx, db.RevokeMemberOfParams{ID: memberID, MeshID: meshID,
		Channel: notifier.Channel, Payload: notifier.RevokePayload(memberID)})
	if errors.Is(err, pgx.ErrNoRows) {
		return MemberRevoked{}, inputErr("no unrevoked member %q in mesh %q", memberID, meshID)
	}
	if err != nil {
		return MemberRevoked{}, fmt.Errorf("revoke member: %w", err)
	}
	ev := audit.Event{MeshID: meshID, Type: "member_revoked", ActorID: actorID,
		Payload: map[string]any{"memberId": memberID, "displayName": row.DisplayName}}
	if err := audit.Append(ctx, q, []audit.Event{ev}, time.Now()); err != nil {
		return MemberRevoked{}, err
	}
	return MemberRevoked{MemberID: row.ID, Revoked: true}, nil
}

// MeshArchived is the result of ArchiveMesh.
type MeshArchived struct {
	MeshID   string `json:"meshId"`
	Slug     string `json:"slug"`
	Archived bool   `json:"archived"`
}

// ArchiveMesh archives a live mesh: it disappears from joins, listings and hellos, its
// slug is free again, and when the archive commits every instance closes its sockets
// (4002 mesh_deleted), in one transaction with its mesh_deleted audit event (on conn, a
// pool or a transaction). actorID is the member acting ("" for the operator).
func ArchiveMesh(ctx context.Context, conn Beginner, meshID, actorID string) (res MeshArchived, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		res, err = archiveMesh(ctx, db.New(tx), meshID, actorID)
		return err
	})
	return res, err
}

func archiveMesh(ctx context.Context, q *db.Queries, meshID, actorID string) (MeshArchived, error) {
	if meshID == "" {
		return MeshArchived{}, inputErr("a mesh id is required")
	}
	row, err := q.ArchiveMesh(ctx, db.ArchiveMeshParams{ID: meshID, Channel: notifier.Channel, Payload: notifier.MeshArchivedPayload(meshID)})
	if errors.Is(err, pgx.ErrNoRows) {
		return MeshArchived{}, inputErr("no live mesh %q", meshID)
	}
	if err != nil {
		return MeshArchived{}, fmt.Errorf("archive mesh: %w", err)
	}
	ev := audit.Event{MeshID: meshID, Type: "mesh_deleted", ActorID: actorID, Payload: map[string]any{"slug": row.Slug}}
	if err := audit.Append(ctx, q, []audit.Event{ev}, time.Now()); err != nil {
		return MeshArchived{}, err
	}
	return MeshArchived{MeshID: row.ID, Slug: row.Slug, Archived: true}, nil
}

func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}
