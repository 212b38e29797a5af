package certctrl

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/issuance"
)

// WorkerRoutes are seed 000's internal worker routes, for the worker token
// only (httpapi.Guard.Worker): PUT .../certificates/{certificate_id}/issue-result
// uploads an issue's result, and POST
// /apiv1/internal/certificates/{certificate_id}/challenges/{http01,tlsalpn01}/{start,stop}
// serve and withdraw challenge answers through certfleet's responders.
func WorkerRoutes(svc *issuance.Service, g *httpapi.Guard) []httpapi.Route {
	w := workerRoutes{svc: svc}
	internal := "/apiv1/internal/certificates/{" + certificateParam + "}/challenges/"
	return []httpapi.Route{
		{Method: "PUT", Path: "/apiv1/users/{" + httpapi.UserPathParam + "}/certificates/{" + certificateParam + "}/issue-result",
			Handler: g.Worker(httpapi.Endpoint(w.issueResult))},
		{Method: "POST", Path: internal + "http01/start", Handler: g.Worker(httpapi.Endpoint(w.answer(issuance.MethodHTTP01, true)))},
		{Method: "POST", Path: internal + "http01/stop", Handler: g.Worker(httpapi.Endpoint(w.answer(issuance.MethodHTTP01, false)))},
		{Method: "POST", Path: internal + "tlsalpn01/start", Handler: g.Worker(httpapi.Endpoint(w.answer(issuance.MethodTLSALPN01, true)))},
		{Method: "POST", Path: internal + "tlsalpn01/stop", Handler: g.Worker(httpapi.Endpoint(w.answer(issuance.MethodTLSALPN01, false)))},
	}
}

type workerRoutes struct{ svc *issuance.Service }

// issueResult takes {"issue_id":N,"status":"issued","certificate_pem":".."}
// or {"issue_id":N,"status":"failed","error":".."} and answers the issue.
func (w workerRoutes) issueResult(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	certID, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		IssueID        int64  `json:"issue_id"`
		Status         string `json:"status"`
		CertificatePEM string `json:"certificate_pem"`
		Error          string `json:"error"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.IssueID <= 0 {
		return 0, nil, apperr.InvalidField("issue_id", "is required: the id of the issue this result ends")
	}
	is, err := w.svc.RecordResult(r.Context(), httpapi.TargetUser(r.Context()), certID, req.IssueID,
		issuance.Result{Status: req.Status, ChainPEM: req.CertificatePEM, Error: req.Error})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewIssue(is), nil
}

// answer serves (start) or withdraws (stop) one answer:
// http01 {"token":..,"key_authorization":..}, tlsalpn01
// {"domain":..,"key_authorization":..}; stop needs no key authorization.
func (w workerRoutes) answer(method string, start bool) httpapi.EndpointFunc {
	return func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		certID, err := certificateID(r)
		if err != nil {
			return 0, nil, err
		}
		var req struct {
			Token            string `json:"token"`
			Domain           string `json:"domain"`
			KeyAuthorization string `json:"key_authorization"`
		}
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return 0, nil, err
		}
		p := issuance.Presentation{CertID: certID, Method: method, Token: req.Token, Domain: req.Domain, KeyAuth: req.KeyAuthorization}
		if start {
			err = w.svc.ServeAnswer(r.Context(), method, p)
		} else {
			err = w.svc.WithdrawAnswer(r.Context(), method, p)
		}
		if err != nil {
			return 0, nil, err
		}
		return http.StatusNoContent, nil, nil
	}
}
