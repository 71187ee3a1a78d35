package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/agent/audit"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
)

func TestErrorFor(t *testing.T) {
	fields := []api.FieldError{
		{File: "p.yaml", Line: 3, Column: 5, Field: "spec.devices[0].mac", Message: "not a MAC address"},
		{File: "p.yaml", Line: 9, Field: "allow", Message: "unknown segment"},
	}
	for _, tc := range []struct {
		name string
		err  error
		want api.Error
	}{
		{name: "invalid policy",
			err: &rejectError{kind: api.KindInvalidPolicy, err: errors.New("invalid policy p.yaml: 2 problem(s): ..."),
				fields: fields},
			want: api.Error{Status: 422, Kind: api.KindInvalidPolicy, Message: "invalid policy: 2 problem(s)", Fields: fields}},
		{name: "rejected", err: &rejectError{kind: api.KindRejected, err: errors.New("cannot enforce"), fields: fields[:1]},
			want: api.Error{Status: 422, Kind: api.KindRejected, Message: "policy rejected: 1 problem(s)", Fields: fields[:1]}},
		{name: "rejected without fields",
			err:  &rejectError{kind: api.KindRejected, err: errors.New("gateway port \"eth9\": no such interface")},
			want: api.Error{Status: 422, Kind: api.KindRejected, Message: "gateway port \"eth9\": no such interface"}},
		{name: "wrapped rejection",
			err: fmt.Errorf("persisted policy revision 3: %w",
				&rejectError{kind: api.KindInvalidPolicy, err: errors.New("x"), fields: fields}),
			want: api.Error{Status: 422, Kind: api.KindInvalidPolicy, Message: "invalid policy: 2 problem(s)", Fields: fields}},
		{name: "other", err: errors.New("read state: disk on fire"),
			want: api.Error{Status: 500, Kind: api.KindInternal, Message: "read state: disk on fire"}},
	} {
		if got := errorFor(tc.err); !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, *got, tc.want)
		}
	}

	// What parse returns for a broken document.
	bad := "apiVersion: ztgate/v1\nkind: Policy\nspec:\n  devices:\n    - name: d1\n      mac: nope\n"
	_, err := parseLimit("bad.yaml", []byte(bad), policy.MaxDocumentSize)
	if err == nil {
		t.Fatal("parse accepted a bad document")
	}
	e := errorFor(err)
	if e.Status != http.StatusUnprocessableEntity || e.Kind != api.KindInvalidPolicy || len(e.Fields) == 0 ||
		e.Message != fmt.Sprintf("invalid policy: %d problem(s)", len(e.Fields)) || e.Fields[0].File != "bad.yaml" {
		t.Errorf("errorFor(parse error): got %+v", e)
	}
}

// testAgent is an Agent with what the API handlers that need no datapath use.
func testAgent(t *testing.T, ac access) *Agent {
	t.Helper()
	log, err := audit.Open(filepath.Join(t.TempDir(), auditFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	a := &Agent{
		access: ac,
		audit:  log,
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		events: newHub(16),
	}
	a.cur.Store(&current{meta: api.PolicyMeta{Revision: 7}})
	return a
}

func withTestPeer(r *http.Request, p *peer) *http.Request {
	if p == nil {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), peerKey{}, p))
}

func decodeError(t *testing.T, body io.Reader) api.Error {
	t.Helper()
	var e api.Error
	if err := json.NewDecoder(body).Decode(&e); err != nil {
		t.Fatalf("decode error body: %v", err)
	}
	return e
}

func TestCheckPeerRefused(t *testing.T) {
	for _, tc := range []struct {
		name          string
		p             *peer
		uid, gid, pid int64
		msg           string
	}{
		{name: "stranger", p: &peer{uid: strangerUID, gid: strangerGID, pid: 4321},
			uid: strangerUID, gid: strangerGID, pid: 4321, msg: "uid 7777"},
		{name: "unreadable credentials", p: &peer{uid: 0, err: errors.New("SO_PEERCRED: boom")},
			uid: -1, gid: -1, pid: -1, msg: "SO_PEERCRED: boom"},
		{name: "no credentials", p: nil, uid: -1, gid: -1, pid: -1, msg: "no peer credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := testAgent(t, access{uids: []uint32{4242}, gid: groupGID, group: true})
			called := false
			h := a.checkPeer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, withTestPeer(httptest.NewRequest("POST", api.PathPolicyApply, nil), tc.p))
			if called {
				t.Error("refused peer reached the handler")
			}
			if w.Code != http.StatusForbidden {
				t.Errorf("status %d, want 403", w.Code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			e := decodeError(t, w.Body)
			if e.Kind != api.KindForbidden || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("body %+v, want kind forbidden naming %q", e, tc.msg)
			}
			rs, err := a.audit.Records()
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 {
				t.Fatalf("%d audit records, want 1: %+v", len(rs), rs)
			}
			r := rs[0]
			if r.Action != api.ActionConnect || r.Result != api.ResultRefused || r.UID != tc.uid || r.GID != tc.gid ||
				r.PID != tc.pid || r.OldRevision != 7 || r.NewRevision != 7 ||
				!strings.Contains(r.Error, "POST "+api.PathPolicyApply) || !strings.Contains(r.Error, tc.msg) {
				t.Errorf("audit record %+v", r)
			}
		})
	}
}

func TestCheckPeerAllowed(t *testing.T) {
	a := testAgent(t, access{uids: []uint32{4242}, gid: groupGID, group: true})
	for _, p := range []*peer{
		{uid: 4242, gid: strangerGID, pid: 1},
		{uid: strangerUID, gid: groupGID, pid: 2},
		{uid: strangerUID, gid: strangerGID, groups: []uint32{groupGID}, pid: 3},
	} {
		var got *peer
		h := a.checkPeer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = peerFrom(r.Context())
			w.WriteHeader(http.StatusTeapot)
		}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, withTestPeer(httptest.NewRequest("GET", api.PathStatus, nil), p))
		if w.Code != http.StatusTeapot || got != p {
			t.Errorf("peer %+v: status %d, handler saw %+v", p, w.Code, got)
		}
	}
	if rs, err := a.audit.Records(); err != nil || len(rs) != 0 {
		t.Errorf("allowed callers audited: %+v, %v", rs, err)
	}
}

// The API's routes that need no datapath, behind the peer check.
func TestRoutesWithoutDatapath(t *testing.T) {
	a := testAgent(t, access{uids: []uint32{4242}})
	h := a.routes()
	me := &peer{uid: 4242, gid: 1, pid: 99}
	do := func(method, path, body string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set(api.HeaderFilename, "site.yaml")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, withTestPeer(r, me))
		return w
	}

	if w := do("GET", api.PathPolicy, ""); w.Code != http.StatusNotFound ||
		decodeError(t, w.Body).Kind != api.KindNotFound {
		t.Errorf("GET policy without one: %d %s", w.Code, w.Body)
	}
	bad := "apiVersion: ztgate/v1\nkind: Policy\nspec: [\n"
	if w := do("POST", api.PathPolicyValidate, bad); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("validate of a broken policy: %d %s", w.Code, w.Body)
	} else if e := decodeError(t, w.Body); e.Kind != api.KindInvalidPolicy || len(e.Fields) == 0 ||
		e.Fields[0].File != "site.yaml" {
		t.Errorf("validate of a broken policy: %+v", e)
	}
	// A rejected apply is audited with the caller, and changes nothing.
	if w := do("POST", api.PathPolicyApply, bad); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("apply of a broken policy: %d %s", w.Code, w.Body)
	}
	if cur := a.cur.Load(); cur.meta.Revision != 7 || cur.pol != nil {
		t.Errorf("rejected apply changed the policy in force: %+v", cur.meta)
	}
	w := do("GET", api.PathAudit, "")
	var rs []api.AuditRecord
	if err := json.NewDecoder(w.Body).Decode(&rs); err != nil || w.Code != http.StatusOK {
		t.Fatalf("GET audit: %d %v", w.Code, err)
	}
	if len(rs) != 1 || rs[0].Action != api.ActionApply || rs[0].Result != api.ResultRejected || rs[0].UID != 4242 ||
		rs[0].PID != 99 || rs[0].OldRevision != 7 || rs[0].NewRevision != 7 || rs[0].PolicyHash != policy.Hash([]byte(bad)) {
		t.Errorf("audit after a rejected apply: %+v", rs)
	}

	// Methods are part of the routes.
	if w := do("GET", api.PathPolicyApply, ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET apply: %d", w.Code)
	}
	// Refused callers never reach a route, known or not.
	r := withTestPeer(httptest.NewRequest("GET", "/v1/nope", nil), &peer{uid: strangerUID})
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Errorf("stranger on an unknown path: %d", w.Code)
	}
}

func TestHandleEvents(t *testing.T) {
	a := testAgent(t, access{})
	for n := uint64(1); n <= 6; n++ {
		e := ev(n, "no_rule")
		if n%2 == 0 {
			e.Reason, e.Device = "spoof_ip", "cam-1"
		}
		e.Direction = "from_device"
		if n%3 == 0 {
			e.Direction = "to_device"
		}
		a.events.publish(e)
	}
	get := func(query string) (int, []uint64) {
		t.Helper()
		w := httptest.NewRecorder()
		a.handleEvents(w, httptest.NewRequest("GET", api.PathEvents+query, nil))
		if w.Code != http.StatusOK {
			return w.Code, nil
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/x-ndjson" {
			t.Errorf("%s: content type %q", query, ct)
		}
		var revs []uint64
		dec := json.NewDecoder(w.Body)
		for {
			var e api.Event
			if err := dec.Decode(&e); err == io.EOF {
				return w.Code, revs
			} else if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			revs = append(revs, e.Revision)
		}
	}
	for _, tc := range []struct {
		query  string
		status int
		want   []uint64
	}{
		{query: "", status: 200, want: seq(1, 6)},
		{query: "?limit=2", status: 200, want: []uint64{5, 6}},
		{query: "?limit=0", status: 200, want: seq(1, 6)},
		{query: "?reason=spoof_ip", status: 200, want: []uint64{2, 4, 6}},
		{query: "?device=cam-1&limit=1", status: 200, want: []uint64{6}},
		{query: "?reason=no_rule&device=cam-1", status: 200, want: nil},
		{query: "?direction=to_device", status: 200, want: []uint64{3, 6}},
		{query: "?direction=from_device&device=cam-1", status: 200, want: []uint64{2, 4}},
		{query: "?direction=inbound", status: 400, want: nil},
		{query: "?reason=bogus", status: 400, want: nil},
		{query: "?limit=-1", status: 400, want: nil},
		{query: "?limit=x", status: 400, want: nil},
	} {
		status, got := get(tc.query)
		if status != tc.status || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %d %v, want %d %v", tc.query, status, got, tc.status, tc.want)
		}
	}
}

func TestHandleEventsFollow(t *testing.T) {
	a := testAgent(t, access{})
	a.events.publish(ev(1, "spoof_ip"))
	a.events.publish(ev(2, "no_rule"))
	srv := httptest.NewServer(http.HandlerFunc(a.handleEvents))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+api.PathEvents+"?follow=1&reason=spoof_ip", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() (uint64, bool) {
		t.Helper()
		if !sc.Scan() {
			return 0, false
		}
		var e api.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		return e.Revision, true
	}
	if n, ok := next(); !ok || n != 1 {
		t.Fatalf("first line: %d %v, want the recent event 1", n, ok)
	}
	// The stream is subscribed once the recent events are flushed.
	a.events.publish(ev(3, "no_rule"))
	a.events.publish(ev(4, "spoof_ip"))
	a.events.publish(ev(5, "spoof_ip"))
	for _, want := range []uint64{4, 5} {
		if n, ok := next(); !ok || n != want {
			t.Fatalf("followed event: %d %v, want %d", n, ok, want)
		}
	}
	// Stopping the hub (the agent stopping) ends the stream.
	a.events.stop()
	if n, ok := next(); ok {
		t.Errorf("after stop: got event %d", n)
	}
	if err := sc.Err(); err != nil {
		t.Errorf("stream did not end cleanly: %v", err)
	}
}
