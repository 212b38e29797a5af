package certctrl

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/issuance"
)

// issueView is an issue in this dialect; the chain is included once
// issued, the key never.
type issueView struct {
	ID            int64    `json:"id"`
	CertificateID int64    `json:"certificate_id"`
	AcctID        int64    `json:"acct_id"`
	Names         []string `json:"names"`
	KeyAlgorithm  string   `json:"key_algorithm"`
	KeySize       int      `json:"key_size"`
	Status        string   `json:"status"`
	Step          string   `json:"step"`
	// ValidationMethod is how the names were proven; Renews the issue this
	// one renews and Replaces the ARI id of that certificate.
	ValidationMethod string     `json:"validation_method"`
	Renews           int64      `json:"renews,omitempty"`
	Replaces         string     `json:"replaces,omitempty"`
	Error            string     `json:"error,omitempty"`
	OrderURL         string     `json:"order_url,omitempty"`
	CertificatePEM   string     `json:"certificate_pem,omitempty"`
	NotBefore        *time.Time `json:"not_before"`
	NotAfter         *time.Time `json:"not_after"`
	RenewAt          *time.Time `json:"renew_at"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

func viewIssue(is issuance.Issue) issueView {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	return issueView{ID: is.ID, CertificateID: is.CertID, AcctID: is.AcctID, Names: is.Names, KeyAlgorithm: is.KeyAlgorithm,
		KeySize: is.KeySize, Status: is.Status, Step: is.Step, ValidationMethod: is.Method, Renews: is.Renews, Replaces: is.Replaces, Error: is.Error, OrderURL: is.OrderURL,
		CertificatePEM: is.ChainPEM, NotBefore: opt(is.NotBefore), NotAfter: opt(is.NotAfter), RenewAt: opt(is.RenewAt),
		CreatedAt: is.CreatedAt, UpdatedAt: is.UpdatedAt}
}

type issueRoutes struct {
	svc *issuance.Service
}

// IssuesGroup is the issuance route group (its own Lambda function):
// POST .../certificates/{certificate_id}/issues starts issuing (202, the
// issue; the active one when an issue is under way) and GET lists the
// certificate's issues, newest first, also as GET .../issues/history
// (scope certificates:issue / read); POST .../revoke revokes (issue); GET
// .../export downloads the current certificate (export; see export).
func IssuesGroup(svc *issuance.Service, g *httpapi.Guard) httpapi.Group {
	c := issueRoutes{svc: svc}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "certificates", Action: action, ObIDParam: certificateParam}
	}
	cert := "certificates/{" + certificateParam + "}"
	var rs []httpapi.Route
	rs = append(rs, userRoutes(g, "POST", cert+"/issues", scope("issue"), httpapi.Endpoint(c.start))...)
	rs = append(rs, userRoutes(g, "GET", cert+"/issues", scope("read"), httpapi.Endpoint(c.history))...)
	rs = append(rs, userRoutes(g, "GET", cert+"/issues/history", scope("read"), httpapi.Endpoint(c.history))...)
	rs = append(rs, userRoutes(g, "POST", cert+"/revoke", scope("issue"), httpapi.Endpoint(c.revoke))...)
	rs = append(rs, userRoutes(g, "GET", cert+"/export", scope("export"), http.HandlerFunc(c.export))...)
	return httpapi.Group{Name: "issues", Routes: rs}
}

// ExportPasswordHeader carries the password of a pfx export (a header,
// not the query string, which ends up in access logs).
const ExportPasswordHeader = "X-Export-Password"

// export downloads the certificate's current certificate:
// ?format=zip (default; certbot's <name>/cert.pem, chain.pem,
// fullchain.pem, privkey.pem), pem (full chain then key) or pfx (PKCS #12
// under the X-Export-Password header, which must be non-empty; pfx needs
// the key); ?include_key=true (default) or false. The key is decrypted by
// the server only when the certificate's server_decrypt_export is on
// (else 403 with error.key EXPORT_FORBIDDEN); before the first issue is
// issued it is 409 NOT_ISSUED; a revoked certificate is still exported.
// Success is the file itself (not the envelope) with Content-Disposition
// attachment and Cache-Control no-store; failures are in the envelope.
func (c issueRoutes) export(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	f, err := c.exportFile(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ContentType)
	h.Set("Content-Disposition", `attachment; filename="`+f.Filename+`"`) // FileBase is [A-Za-z0-9._-]
	h.Set("Content-Length", strconv.Itoa(len(f.Body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(f.Body)
	}
}

func (c issueRoutes) exportFile(r *http.Request) (issuance.ExportFile, error) {
	id, err := certificateID(r)
	if err != nil {
		return issuance.ExportFile{}, err
	}
	q := r.URL.Query()
	withKey := true
	if raw := q.Get("include_key"); raw != "" {
		if withKey, err = strconv.ParseBool(raw); err != nil {
			return issuance.ExportFile{}, apperr.InvalidField("include_key", "must be true or false, not %q", raw)
		}
	}
	password := r.Header.Get(ExportPasswordHeader)
	// Refuse a bad request before the key is opened.
	format, err := issuance.CheckExportRequest(q.Get("format"), withKey, password)
	if err != nil {
		return issuance.ExportFile{}, err
	}
	ex, err := c.svc.Export(r.Context(), httpapi.TargetUser(r.Context()), id, withKey)
	if err != nil {
		return issuance.ExportFile{}, err
	}
	return ex.Encode(format, password)
}

// revoke revokes the newest issued certificate: {"reason": <RFC 5280 code>}
// (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation...).
func (c issueRoutes) revoke(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Reason *int `json:"reason"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Reason == nil {
		return 0, nil, apperr.InvalidField("reason", "is required: an RFC 5280 reason code (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation)")
	}
	is, err := c.svc.Revoke(r.Context(), httpapi.TargetUser(r.Context()), id, *req.Reason)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewIssue(is), nil
}

func (c issueRoutes) start(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	user := httpapi.TargetUser(r.Context())
	is, err := c.svc.Start(r.Context(), user, id)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", fmt.Sprintf("/apiv1/users/%d/certificates/%d/issues", user, id))
	return http.StatusAccepted, viewIssue(is), nil
}

func (c issueRoutes) history(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	limit, cursor, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	list, next, err := c.svc.History(r.Context(), httpapi.TargetUser(r.Context()), id, limit, cursor)
	if err != nil {
		return 0, nil, err
	}
	views := make([]issueView, len(list))
	for i, is := range list {
		views[i] = viewIssue(is)
	}
	return http.StatusOK, listPage(w, views, next), nil
}
