package certctrl

import (
	"fmt"
	"net/http"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/issuance"
)

// issueView is an issue in this dialect; the chain is included once
// issued, the key never.
type issueView struct {
	ID             int64      `json:"id"`
	CertificateID  int64      `json:"certificate_id"`
	AcctID         int64      `json:"acct_id"`
	Names          []string   `json:"names"`
	KeyAlgorithm   string     `json:"key_algorithm"`
	KeySize        int        `json:"key_size"`
	Status         string     `json:"status"`
	Step           string     `json:"step"`
	Error          string     `json:"error,omitempty"`
	OrderURL       string     `json:"order_url,omitempty"`
	CertificatePEM string     `json:"certificate_pem,omitempty"`
	NotBefore      *time.Time `json:"not_before"`
	NotAfter       *time.Time `json:"not_after"`
	RenewAt        *time.Time `json:"renew_at"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

func viewIssue(is issuance.Issue) issueView {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	return issueView{ID: is.ID, CertificateID: is.CertID, AcctID: is.AcctID, Names: is.Names, KeyAlgorithm: is.KeyAlgorithm,
		KeySize: is.KeySize, Status: is.Status, Step: is.Step, Error: is.Error, OrderURL: is.OrderURL,
		CertificatePEM: is.ChainPEM, NotBefore: opt(is.NotBefore), NotAfter: opt(is.NotAfter), RenewAt: opt(is.RenewAt),
		CreatedAt: is.CreatedAt, UpdatedAt: is.UpdatedAt}
}

type issueRoutes struct {
	svc *issuance.Service
}

// IssuesGroup is the issuance route group (its own Lambda function):
// POST .../certificates/{certificate_id}/issues starts issuing (202, the
// issue; the active one when an issue is under way) and GET lists the
// certificate's issues, newest first (scope certificates:issue / read).
func IssuesGroup(svc *issuance.Service, g *httpapi.Guard) httpapi.Group {
	c := issueRoutes{svc: svc}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "certificates", Action: action, ObIDParam: certificateParam}
	}
	suffix := "certificates/{" + certificateParam + "}/issues"
	var rs []httpapi.Route
	rs = append(rs, userRoutes(g, "POST", suffix, scope("issue"), httpapi.Endpoint(c.start))...)
	rs = append(rs, userRoutes(g, "GET", suffix, scope("read"), httpapi.Endpoint(c.history))...)
	rs = append(rs, userRoutes(g, "POST", "certificates/{"+certificateParam+"}/revoke", scope("issue"), httpapi.Endpoint(c.revoke))...)
	return httpapi.Group{Name: "issues", Routes: rs}
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
