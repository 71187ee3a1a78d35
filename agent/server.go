package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/policy"
)

// routes is the local API. Every request passes the peer check first.
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, a.handleStatus)
	mux.HandleFunc("GET "+api.PathPolicy, a.handlePolicy)
	mux.HandleFunc("POST "+api.PathPolicyValidate, a.handleValidate)
	mux.HandleFunc("POST "+api.PathPolicyDiff, a.handleDiff)
	mux.HandleFunc("POST "+api.PathPolicyApply, a.handleApply)
	mux.HandleFunc("PUT "+api.PathPolicyDevices+"{name}", a.handlePutDevice)
	mux.HandleFunc("DELETE "+api.PathPolicyDevices+"{name}", a.handleDeleteDevice)
	mux.HandleFunc("POST "+api.PathExplain, a.handleExplain)
	mux.HandleFunc("GET "+api.PathDevices, a.handleDevices)
	mux.HandleFunc("GET "+api.PathFlows, a.handleFlows)
	mux.HandleFunc("GET "+api.PathEvents, a.handleEvents)
	mux.HandleFunc("GET "+api.PathAudit, a.handleAudit)
	return a.checkPeer(mux)
}

// checkPeer refuses (403) and audits callers that are not allowed.
func (a *Agent) checkPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := peerFrom(r.Context())
		if err := a.access.allowed(p); err != nil {
			rec := api.AuditRecord{Action: api.ActionConnect, UID: int64(p.uid), GID: int64(p.gid), PID: int64(p.pid),
				Result: api.ResultRefused, Error: fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err)}
			if p.err != nil {
				rec.UID, rec.GID, rec.PID = -1, -1, -1
			}
			cur := a.cur.Load()
			rec.OldRevision, rec.NewRevision = cur.meta.Revision, cur.meta.Revision
			if _, aerr := a.audit.Append(rec); aerr != nil {
				a.log.Error("audit log", "err", aerr)
			}
			a.log.Warn("refused API caller", "uid", p.uid, "gid", p.gid, "pid", p.pid, "path", r.URL.Path, "err", err)
			writeError(w, &api.Error{Status: http.StatusForbidden, Kind: api.KindForbidden, Message: err.Error()})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *api.Error) {
	writeJSON(w, e.Status, e)
}

// badRequest answers 400 with msg.
func badRequest(w http.ResponseWriter, msg string) {
	writeError(w, &api.Error{Status: http.StatusBadRequest, Kind: api.KindBadRequest, Message: msg})
}

// errorFor maps an error to its API form.
func errorFor(err error) *api.Error {
	var re *rejectError
	if errors.As(err, &re) {
		msg := re.err.Error()
		if len(re.fields) > 0 {
			// The fields carry the details; the message only sums them up.
			msg = fmt.Sprintf("policy rejected: %d problem(s)", len(re.fields))
			if re.kind == api.KindInvalidPolicy {
				msg = fmt.Sprintf("invalid policy: %d problem(s)", len(re.fields))
			}
		}
		return &api.Error{Status: http.StatusUnprocessableEntity, Kind: re.kind, Message: msg, Fields: re.fields}
	}
	return &api.Error{Status: http.StatusInternalServerError, Kind: api.KindInternal, Message: err.Error()}
}

// readPolicy reads a POSTed policy document (bounded: an oversized one is a rejection).
func (a *Agent) readPolicy(w http.ResponseWriter, r *http.Request) (string, []byte, bool) {
	name := r.Header.Get(api.HeaderFilename)
	if name == "" {
		name = "<request>"
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, int64(a.maxPolicyBytes())+1))
	if err != nil {
		badRequest(w, "read policy: "+err.Error())
		return "", nil, false
	}
	return name, data, true
}

// readValid reads a POSTed policy document and validates it; when either fails it has answered
// the request.
func (a *Agent) readValid(w http.ResponseWriter, r *http.Request) (*api.ValidateResult, *policy.Policy, bool) {
	name, doc, ok := a.readPolicy(w, r)
	if !ok {
		return nil, nil, false
	}
	res, p, err := a.validate(name, doc)
	if err != nil {
		writeError(w, errorFor(err))
		return nil, nil, false
	}
	return res, p, true
}

func (a *Agent) handleValidate(w http.ResponseWriter, r *http.Request) {
	if res, _, ok := a.readValid(w, r); ok {
		writeJSON(w, http.StatusOK, res)
	}
}

func (a *Agent) handleDiff(w http.ResponseWriter, r *http.Request) {
	_, p, ok := a.readValid(w, r)
	if !ok {
		return
	}
	a.polMu.RLock()
	cur := a.cur.Load()
	diff := policy.Compare(cur.pol, p).Limit(policy.ListedDevices)
	a.polMu.RUnlock()
	writeJSON(w, http.StatusOK, api.DiffResult{Revision: cur.meta.Revision, Diff: diff})
}

func (a *Agent) handleApply(w http.ResponseWriter, r *http.Request) {
	name, doc, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	res, err := a.apply(name, doc, callerOf(r))
	if err != nil {
		writeError(w, errorFor(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *Agent) handlePolicy(w http.ResponseWriter, _ *http.Request) {
	a.polMu.RLock()
	cur := a.cur.Load()
	doc, err := cur.yaml, error(nil)
	if doc == nil && cur.pol != nil {
		// Changed device by device since the last document: write the policy out.
		doc, err = policy.Marshal(cur.pol)
	}
	a.polMu.RUnlock()
	switch {
	case cur.pol == nil:
		writeError(w, &api.Error{Status: http.StatusNotFound, Kind: api.KindNotFound, Message: "no policy has been applied"})
	case err != nil:
		writeError(w, errorFor(err))
	default:
		writeJSON(w, http.StatusOK, api.PolicyInfo{PolicyMeta: cur.meta, YAML: string(doc)})
	}
}

func (a *Agent) handleExplain(w http.ResponseWriter, r *http.Request) {
	var q api.ExplainRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&q); err != nil {
		badRequest(w, "explain: "+err.Error())
		return
	}
	a.polMu.RLock()
	cur := a.cur.Load()
	var e *policy.Explanation
	var err error
	if cur.pol != nil {
		e, err = policy.Explain(cur.pol, cur.snap, q)
	}
	a.polMu.RUnlock()
	if cur.pol == nil {
		writeError(w, &api.Error{Status: http.StatusNotFound, Kind: api.KindNotFound, Message: "no policy has been applied"})
		return
	}
	if err != nil {
		badRequest(w, "explain: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, api.Explanation{Revision: cur.meta.Revision, Explanation: *e})
}

func (a *Agent) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.status())
}

func (a *Agent) handleDevices(w http.ResponseWriter, _ *http.Request) {
	ds, err := a.devices()
	if err != nil {
		writeError(w, errorFor(err))
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

// queryLimit reads the limit parameter of q (0 when absent); on a bad one it answers 400 and
// reports false.
func queryLimit(w http.ResponseWriter, q url.Values) (int, bool) {
	s := q.Get("limit")
	if s == "" {
		return 0, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		badRequest(w, "limit: not a non-negative number")
		return 0, false
	}
	return n, true
}

func (a *Agent) handleFlows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := queryLimit(w, q)
	if !ok {
		return
	}
	fs, err := a.flows(q.Get("device"), limit)
	if errors.Is(err, errNoDevice) {
		writeError(w, &api.Error{Status: http.StatusNotFound, Kind: api.KindNotFound, Message: err.Error()})
		return
	}
	if err != nil {
		writeError(w, errorFor(err))
		return
	}
	writeJSON(w, http.StatusOK, fs)
}

func (a *Agent) handleAudit(w http.ResponseWriter, _ *http.Request) {
	rs, err := a.audit.Records()
	if err != nil {
		writeError(w, errorFor(err))
		return
	}
	if rs == nil {
		rs = []api.AuditRecord{}
	}
	writeJSON(w, http.StatusOK, rs)
}

// handleEvents streams the recent matching events, then (follow=1) new ones, as NDJSON.
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	device, reason, dir := q.Get("device"), q.Get("reason"), q.Get("direction")
	if reason != "" {
		if _, ok := bpf.ParseReason(reason); !ok {
			badRequest(w, fmt.Sprintf("unknown reason %q", reason))
			return
		}
	}
	if dir != "" && dir != bpf.DirFromDevice.String() && dir != bpf.DirToDevice.String() {
		badRequest(w, fmt.Sprintf("unknown direction %q (from_device or to_device)", dir))
		return
	}
	limit, ok := queryLimit(w, q)
	if !ok {
		return
	}
	match := func(ev *api.Event) bool {
		return (device == "" || ev.Device == device) && (reason == "" || ev.Reason == reason) &&
			(dir == "" || ev.Direction == dir)
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	var recent []api.Event
	var sub *subscriber
	if follow {
		recent, sub = a.events.subscribe(match, limit)
		defer a.events.unsubscribe(sub)
	} else {
		recent = a.events.recent(match, limit)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for i := range recent {
		if err := enc.Encode(&recent[i]); err != nil {
			return
		}
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	if !follow {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.closed:
			return
		case ev := <-sub.ch:
			if err := enc.Encode(&ev); err != nil {
				return
			}
			// Write what is queued, then flush once.
			for n := len(sub.ch); n > 0; n-- {
				ev := <-sub.ch
				if err := enc.Encode(&ev); err != nil {
					return
				}
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}
