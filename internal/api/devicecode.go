package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/clitoken"
	"github.com/meshbroker/meshbroker/internal/ids"
)

const (
	// deviceCodeTTL: a code must be approved and collected within 5 minutes of its creation.
	deviceCodeTTL = 5 * time.Minute
	// maxLiveDeviceCodes caps unexpired codes across the fleet: starting a login is open to
	// anyone, and the per-IP budget alone does not bound what many addresses can create.
	maxLiveDeviceCodes = 10000
	// maxLiveDeviceCodesPerIP caps them per client address (an IPv6 /64), so a few
	// addresses cannot fill the global cap and lock everyone out of logging in: a person
	// logs in from one machine at a time.
	maxLiveDeviceCodesPerIP = 10
	// codeAlphabet has no 0/O or 1/I: user codes are typed by people. 32 symbols, so a
	// random byte mod 32 is uniform.
	codeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	// maxCodeInPath bounds the code a poll or approval looks up (longer is unknown).
	maxCodeInPath = 64
)

// randomCode returns n characters of codeAlphabet from crypto/rand.
func randomCode(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails since Go 1.24
	for i := range b {
		b[i] = codeAlphabet[b[i]%32]
	}
	return string(b)
}

// deviceInfo is what the CLI tells about its machine when it starts a login.
type deviceInfo struct {
	Hostname, Platform, Arch string
}

// parseDeviceInfo reads the optional body of POST /cli/device-code. A body that is not a
// JSON object of strings reads as no fields (the original tolerated any body); a field over
// its bound is a 400.
func parseDeviceInfo(raw []byte) (deviceInfo, error) {
	var body struct {
		Hostname *string `json:"hostname"`
		Platform *string `json:"platform"`
		Arch     *string `json:"arch"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return deviceInfo{}, nil
	}
	var d deviceInfo
	if body.Hostname != nil {
		d.Hostname = *body.Hostname
	}
	if body.Platform != nil {
		d.Platform = *body.Platform
	}
	if body.Arch != nil {
		d.Arch = *body.Arch
	}
	// Informational: NULs (which text cannot hold) are dropped rather than refused.
	d.Hostname, d.Platform, d.Arch = dropNUL(d.Hostname), dropNUL(d.Platform), dropNUL(d.Arch)
	if err := firstErr(tooLong("hostname", d.Hostname, maxDeviceField), tooLong("platform", d.Platform, maxDeviceField),
		tooLong("arch", d.Arch, maxDeviceField)); err != nil {
		return deviceInfo{}, err
	}
	return d, nil
}

// createDeviceCode: POST /cli/device-code.
func (a *API) createDeviceCode(c *Call) error {
	if err := a.readBody(c); err != nil {
		return err
	}
	info, err := parseDeviceInfo(c.Body)
	if err != nil {
		return err
	}
	ctx := c.R.Context()
	live, err := a.q.CountLiveDeviceCodes(ctx, maxLiveDeviceCodes)
	if err != nil {
		return fmt.Errorf("count live device codes: %w", err)
	}
	if live >= maxLiveDeviceCodes {
		c.W.Header().Set("Retry-After", "60")
		return Fail(http.StatusServiceUnavailable, "Too many logins in progress, try again later")
	}
	ip := a.clientIP(c.R)
	fromIP, err := a.q.CountLiveDeviceCodesFrom(ctx, db.CountLiveDeviceCodesFromParams{Ip: ip, Cap: maxLiveDeviceCodesPerIP})
	if err != nil {
		return fmt.Errorf("count live device codes of %s: %w", ip, err)
	}
	if fromIP >= maxLiveDeviceCodesPerIP {
		c.W.Header().Set("Retry-After", "60")
		return Fail(http.StatusTooManyRequests, "Too many logins in progress from this address, try again later")
	}
	// Housekeeping on the way, a few rows at a time: approvals nobody collected lose their
	// bearer here (a poll does it too, but the CLI may be gone), and the insert deletes
	// codes that expired an hour ago.
	if err := a.q.ExpireUncollectedDeviceCodes(ctx, 16); err != nil {
		return fmt.Errorf("expire uncollected device codes: %w", err)
	}
	expires := time.Now().Add(deviceCodeTTL)
	// A pending code with the same user code makes the insert a no-op: draw again. With
	// 32^8 user codes and at most 10 000 live ones, a second draw is already rare.
	for range 5 {
		p := db.InsertDeviceCodeParams{
			ID: ids.New(), DeviceCode: randomCode(16), UserCode: randomCode(4) + "-" + randomCode(4),
			SessionID: "clm_sess_" + ids.New(), Hostname: optString(info.Hostname), Platform: optString(info.Platform),
			Arch: optString(info.Arch), IpAddress: optString(ip), ExpiresAt: expires,
		}
		n, err := a.q.InsertDeviceCode(ctx, p)
		if err != nil {
			return fmt.Errorf("insert device code: %w", err)
		}
		if n == 1 {
			app := strings.TrimRight(a.cfg.AppURL, "/")
			return c.OK(map[string]any{
				"device_code": p.DeviceCode, "user_code": p.UserCode, "session_id": p.SessionID,
				"expires_at": audit.FormatTime(expires), "verification_url": app + "/cli-auth", "token_url": app + "/token",
			})
		}
	}
	return fmt.Errorf("insert device code: no free user code in 5 draws")
}

// pollDeviceCode: GET /cli/device-code/{code}. Always 200 with a status; the bearer of an
// approved code is handed out to exactly one poll.
func (a *API) pollDeviceCode(c *Call) error {
	code := c.R.PathValue("code")
	if code == "" || len(code) > maxCodeInPath || !storable(code) {
		return c.OK(map[string]any{"status": "expired"})
	}
	ctx := c.R.Context()
	row, err := a.q.ConsumeDeviceCode(ctx, code)
	switch {
	case err == nil:
		name := "User"
		if row.Name != nil && *row.Name != "" {
			name = *row.Name
		} else if row.Email != nil && *row.Email != "" {
			name = *row.Email
		}
		return c.OK(map[string]any{"status": "approved", "session_token": row.SessionToken,
			"user": map[string]any{"id": row.UserID, "display_name": name, "email": row.Email}})
	case !loginNoRows(err):
		return fmt.Errorf("consume device code: %w", err)
	}
	status, err := a.q.PollDeviceCodeStatus(ctx, code)
	if loginNoRows(err) {
		return c.OK(map[string]any{"status": "expired"})
	}
	if err != nil {
		return fmt.Errorf("poll device code: %w", err)
	}
	return c.OK(map[string]any{"status": status})
}

// approverBody is the body of the routes that act for a user (device-code approval,
// /cli/token): the user, and for /cli/token the device.
type approverBody struct {
	UserID   string `json:"user_id"`
	Email    string `json:"email"`
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
	Platform string `json:"platform"`
	Arch     string `json:"arch"`
}

// decodeApprover authenticates an approver route and reads its body. A request without any
// Authorization is refused before its body is read; then the body; then the caller must be
// the web app or a bearer of body.user_id. Returns whether the caller is the app.
func (a *API) decodeApprover(c *Call) (approverBody, bool, error) {
	var b approverBody
	if _, ok := bearer(c.R); !ok {
		return b, false, Fail(http.StatusUnauthorized, "unauthorized")
	}
	if err := a.Decode(c, &b, "Invalid body", false); err != nil {
		return b, false, err
	}
	b.UserID, b.Email = strings.TrimSpace(b.UserID), strings.TrimSpace(b.Email)
	if b.UserID == "" || b.Email == "" {
		return b, false, Fail(http.StatusBadRequest, "user_id and email required")
	}
	if err := firstErr(tooLong("user_id", b.UserID, maxUserIDField), tooLong("email", b.Email, maxEmailField),
		tooLong("name", b.Name, maxNameField), tooLong("hostname", b.Hostname, maxDeviceField),
		tooLong("platform", b.Platform, maxDeviceField), tooLong("arch", b.Arch, maxDeviceField)); err != nil {
		return b, false, err
	}
	if err := a.AuthorizeFor(c, b.UserID); err != nil {
		return b, false, err
	}
	return b, a.IsApp(c.R), nil
}

// vouch records the user the web app vouches for (id, email, name); a bearer of the user
// changes nothing about the account.
func vouch(ctx context.Context, q *db.Queries, b approverBody, isApp bool) error {
	if !isApp {
		return nil
	}
	if err := q.UpsertUser(ctx, db.UpsertUserParams{ID: b.UserID, Email: b.Email, Name: optString(strings.TrimSpace(b.Name))}); err != nil {
		if loginUniqueViolation(err, "users_email_key") {
			return Fail(http.StatusConflict, "email belongs to another user")
		}
		return fmt.Errorf("upsert user: %w", err)
	}
	return nil
}

// approveDeviceCode: POST /cli/device-code/{code}/approve. Locks the code, mints the bearer
// and marks the code approved in one transaction: a code approved twice mints one token.
func (a *API) approveDeviceCode(c *Call) error {
	b, isApp, err := a.decodeApprover(c)
	if err != nil {
		return err
	}
	code := c.R.PathValue("code")
	if code == "" || len(code) > maxCodeInPath || !storable(code) {
		return Fail(http.StatusNotFound, "Code not found or expired")
	}
	expired := false
	err = a.loginTx(c.R.Context(), func(q *db.Queries) error {
		ctx := c.R.Context()
		if err := vouch(ctx, q, b, isApp); err != nil {
			return err
		}
		dc, err := q.LockDeviceCodeForApproval(ctx, db.LockDeviceCodeForApprovalParams{Code: code, UserCode: strings.ToUpper(code)})
		if loginNoRows(err) {
			return Fail(http.StatusNotFound, "Code not found or expired")
		}
		if err != nil {
			return fmt.Errorf("look up device code: %w", err)
		}
		switch {
		case dc.Status == "expired":
			return Fail(http.StatusGone, "Code expired")
		case dc.Status != "pending":
			return Fail(http.StatusConflict, "Code already approved")
		case dc.Expired:
			// Committed below, then answered 410.
			expired = true
			if err := q.ExpireDeviceCode(ctx, dc.ID); err != nil {
				return fmt.Errorf("expire device code: %w", err)
			}
			return nil
		}
		m, err := clitoken.Mint(ctx, q, clitoken.Params{UserID: b.UserID, DeviceCodeID: dc.ID,
			Hostname: deref(dc.Hostname), Platform: deref(dc.Platform), Arch: deref(dc.Arch)})
		if err != nil {
			return tooManyTokens(err)
		}
		if _, err := q.ApproveDeviceCode(ctx, db.ApproveDeviceCodeParams{ID: dc.ID, UserID: &b.UserID, SessionToken: &m.Token}); err != nil {
			return fmt.Errorf("approve device code: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if expired {
		return Fail(http.StatusGone, "Code expired")
	}
	return c.OK(map[string]any{"ok": true})
}

func dropNUL(s string) string { return strings.ReplaceAll(s, "\x00", "") }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
