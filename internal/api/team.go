package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// Team membership: any member sees the members; owners and admins add,
// change and remove them; only owners grant or take away ownership; a team
// always keeps an owner. API keys act as members.

type memberJSON struct {
	UserID   string    `json:"user_id"`
	Email    string    `json:"email"`
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	JoinedAt time.Time `json:"joined_at"`
}

func toMemberJSON(m store.Member) memberJSON {
	return memberJSON{UserID: m.UserID, Email: m.Email, Name: m.Name, Role: m.Role, JoinedAt: m.JoinedAt}
}

// checkRole refuses a role that is not one of the three.
func checkRole(role string) error {
	switch role {
	case store.RoleOwner, store.RoleAdmin, store.RoleMember:
		return nil
	case "":
		return errorf(codeInvalid, "role is required: owner, admin or member")
	default:
		return errorf(codeInvalid, "role %q is not one of owner, admin, member", role)
	}
}

// canManage reports whether p may change the team's membership.
func (p principal) canManage() bool {
	return p.APIKeyID == "" && (p.Role == store.RoleOwner || p.Role == store.RoleAdmin)
}

// pathUserID returns the {user_id} path value as a canonical UUID.
func pathUserID(r *http.Request) (string, error) {
	id, err := uuid.Parse(r.PathValue("user_id"))
	if err != nil {
		return "", errorf(codeNotFound, "no member with user id %q", r.PathValue("user_id"))
	}
	return id.String(), nil
}

func (s *server) handleListMembers() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		ms, err := s.store.TeamMembers(r.Context(), caller(r).TeamID)
		if err != nil {
			return err
		}
		out := make([]memberJSON, 0, len(ms))
		for _, m := range ms {
			out = append(out, toMemberJSON(m))
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

func (s *server) handleAddMember() http.Handler {
	type request struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		if !p.canManage() {
			return errorf(codeForbidden, "only the team's owners and admins can add members")
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		email, err := normalizeEmail(req.Email)
		if err != nil {
			return err
		}
		if err := checkRole(req.Role); err != nil {
			return err
		}
		// Checked again under the team's lock, where the caller's role is
		// the one that counts (it may have changed since it was read).
		check := func(me store.Member) error {
			if me.Role != store.RoleOwner && me.Role != store.RoleAdmin {
				return errorf(codeForbidden, "only the team's owners and admins can add members")
			}
			if req.Role == store.RoleOwner && me.Role != store.RoleOwner {
				return errorf(codeForbidden, "only an owner can add an owner")
			}
			return nil
		}
		if err := check(store.Member{Role: p.Role}); err != nil {
			return err
		}
		m, err := s.store.AddTeamMember(r.Context(), p.TeamID, p.UserID, email, req.Role, check,
			s.event(r, p, "team.member.add", map[string]any{"email": email, "role": req.Role}))
		switch {
		case errors.Is(err, store.ErrNotFound):
			return errorf(codeNotFound, "no account with email %s; they must sign up first", email)
		case errors.Is(err, store.ErrConflict):
			return errorf(codeConflict, "%s is already a member of this team", email)
		case err != nil:
			return err
		}
		encode(w, http.StatusCreated, toMemberJSON(m))
		return nil
	})
}

// errLastOwner is the answer to a change that would leave a team without
// an owner.
func errLastOwner() *Error {
	return errorf(codeConflict, "this is the team's last owner; make another member owner first")
}

func (s *server) handleUpdateMember() http.Handler {
	type request struct {
		Role string `json:"role"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		userID, err := pathUserID(r)
		if err != nil {
			return err
		}
		if !p.canManage() {
			return errorf(codeForbidden, "only the team's owners and admins can change roles")
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if err := checkRole(req.Role); err != nil {
			return err
		}
		// The caller's role is judged as it is under the lock: one demoted
		// since this request was authenticated has lost its rights.
		m, err := s.store.SetMemberRole(r.Context(), p.TeamID, userID, p.UserID, req.Role, func(target, me store.Member, owners int) error {
			if me.Role != store.RoleOwner && me.Role != store.RoleAdmin {
				return errorf(codeForbidden, "only the team's owners and admins can change roles")
			}
			if (target.Role == store.RoleOwner || req.Role == store.RoleOwner) && target.Role != req.Role && me.Role != store.RoleOwner {
				return errorf(codeForbidden, "only an owner can grant or take away the owner role")
			}
			if target.Role == store.RoleOwner && req.Role != store.RoleOwner && owners <= 1 {
				return errLastOwner()
			}
			return nil
		}, s.event(r, p, "team.member.update", nil))
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "no member with user id %s in this team", userID)
		}
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toMemberJSON(m))
		return nil
	})
}

func (s *server) handleRemoveMember() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		userID, err := pathUserID(r)
		if err != nil {
			return err
		}
		self := p.APIKeyID == "" && p.UserID == userID
		if !self && !p.canManage() {
			return errorf(codeForbidden, "only the team's owners and admins can remove other members")
		}
		err = s.store.RemoveTeamMember(r.Context(), p.TeamID, userID, p.UserID, func(target, me store.Member, owners int) error {
			if !self && me.Role != store.RoleOwner && me.Role != store.RoleAdmin {
				return errorf(codeForbidden, "only the team's owners and admins can remove other members")
			}
			if target.Role == store.RoleOwner && !self && me.Role != store.RoleOwner {
				return errorf(codeForbidden, "only an owner can remove an owner")
			}
			if target.Role == store.RoleOwner && owners <= 1 {
				return errLastOwner()
			}
			return nil
		}, s.event(r, p, "team.member.remove", nil))
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "no member with user id %s in this team", userID)
		}
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
