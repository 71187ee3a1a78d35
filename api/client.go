package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// maxBody bounds a non-stream response body the client reads.
const maxBody = 64 << 20

// Client talks to the agent over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the agent listening on socket (DefaultSocket when empty).
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 10 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket is the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader,
	hdr http.Header) (*http.Response, error) {
	u := "http://ztgate" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &ErrUnreachable{Socket: c.socket, Err: unwrapURL(err)}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	e := &Error{Status: resp.StatusCode}
	if err := json.Unmarshal(data, e); err != nil || e.Kind == "" {
		e.Kind = KindInternal
		e.Message = fmt.Sprintf("agent: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	return e
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, q, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeBody(resp, out)
}

func (c *Client) postJSON(ctx context.Context, path string, body io.Reader, hdr http.Header, out any) error {
	resp, err := c.do(ctx, http.MethodPost, path, nil, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeBody(resp, out)
}

func decodeBody(resp *http.Response, out any) error {
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(out); err != nil {
		return fmt.Errorf("decode %s response: %w", resp.Request.URL.Path, err)
	}
	return nil
}

func policyHeader(filename string) http.Header {
	h := http.Header{"Content-Type": {"application/yaml"}}
	if filename != "" {
		h.Set(HeaderFilename, filename)
	}
	return h
}

// Status returns the agent's state.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.getJSON(ctx, PathStatus, nil, &s)
}

// Policy returns the policy in force.
func (c *Client) Policy(ctx context.Context) (*PolicyInfo, error) {
	var p PolicyInfo
	return &p, c.getJSON(ctx, PathPolicy, nil, &p)
}

// Validate checks a policy document without applying it. filename names it in errors.
func (c *Client) Validate(ctx context.Context, filename string, doc []byte) (*ValidateResult, error) {
	var r ValidateResult
	return &r, c.postJSON(ctx, PathPolicyValidate, bytes.NewReader(doc), policyHeader(filename), &r)
}

// Diff returns what applying doc would change.
func (c *Client) Diff(ctx context.Context, filename string, doc []byte) (*DiffResult, error) {
	var d DiffResult
	return &d, c.postJSON(ctx, PathPolicyDiff, bytes.NewReader(doc), policyHeader(filename), &d)
}

// Apply makes doc the policy in force (all or nothing).
func (c *Client) Apply(ctx context.Context, filename string, doc []byte) (*ApplyResult, error) {
	var r ApplyResult
	return &r, c.postJSON(ctx, PathPolicyApply, bytes.NewReader(doc), policyHeader(filename), &r)
}

// Explain asks the agent's reference model about a flow under the policy in force.
func (c *Client) Explain(ctx context.Context, q ExplainRequest) (*Explanation, error) {
	body, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	var e Explanation
	return &e, c.postJSON(ctx, PathExplain, bytes.NewReader(body), http.Header{"Content-Type": {"application/json"}}, &e)
}

// Devices lists the devices of the policy in force with their counters.
func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	var ds []Device
	return ds, c.getJSON(ctx, PathDevices, nil, &ds)
}

// FlowFilter selects flows. Zero value: every flow.
type FlowFilter struct {
	Device string // only the flows charged to this device (name)
	Limit  int    // at most this many (0: all)
}

// Flows lists the connections of the flow table.
func (c *Client) Flows(ctx context.Context, f FlowFilter) ([]Flow, error) {
	q := url.Values{}
	if f.Device != "" {
		q.Set("device", f.Device)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var fs []Flow
	return fs, c.getJSON(ctx, PathFlows, q, &fs)
}

// Audit returns the audit log.
func (c *Client) Audit(ctx context.Context) ([]AuditRecord, error) {
	var rs []AuditRecord
	return rs, c.getJSON(ctx, PathAudit, nil, &rs)
}

// EventFilter selects events. Zero value: every recent event, then return.
type EventFilter struct {
	Follow bool   // keep streaming new events until ctx ends
	Device string // only this device (name)
	Reason string // only this reason
	// Direction: only events of frames from devices ("from_device") or toward them ("to_device").
	Direction string
	Limit     int // at most this many recent events first (0: all the agent keeps)
}

// Events streams events to fn until the stream ends, ctx ends (nil is returned then) or fn
// returns an error.
func (c *Client) Events(ctx context.Context, f EventFilter, fn func(Event) error) error {
	q := url.Values{}
	if f.Follow {
		q.Set("follow", "1")
	}
	if f.Device != "" {
		q.Set("device", f.Device)
	}
	if f.Reason != "" {
		q.Set("reason", f.Reason)
	}
	if f.Direction != "" {
		q.Set("direction", f.Direction)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	resp, err := c.do(ctx, http.MethodGet, PathEvents, q, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read events: %w", err)
	}
	return nil
}

// PutDevice makes doc, one device document (the fields of a spec.devices entry), the device
// named in it: it replaces the device of that name or joins the policy, as the next revision.
func (c *Client) PutDevice(ctx context.Context, filename string, name string, doc []byte) (*ApplyResult, error) {
	return c.deviceCall(ctx, http.MethodPut, name, bytes.NewReader(doc), policyHeader(filename))
}

// DeleteDevice removes device name from the policy in force, as the next revision.
func (c *Client) DeleteDevice(ctx context.Context, name string) (*ApplyResult, error) {
	return c.deviceCall(ctx, http.MethodDelete, name, nil, nil)
}

func (c *Client) deviceCall(ctx context.Context, method, name string, body io.Reader,
	hdr http.Header) (*ApplyResult, error) {
	resp, err := c.do(ctx, method, PathPolicyDevices+url.PathEscape(name), nil, body, hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r ApplyResult
	return &r, decodeBody(resp, &r)
}
