// Package api is the agent's local API: the JSON documents exchanged over the agent's unix
// socket (HTTP/JSON, newline-delimited JSON for streams) and a client for it. The agent
// serves it, the ztgate CLI consumes it.
package api

import (
	"fmt"
	"strings"
	"time"

	"github.com/ztgate/ztgate/policy"
)

// DefaultSocket is where the agent listens unless configured otherwise.
const DefaultSocket = "/run/ztgate/ztgate.sock"

// Endpoints of the local API.
const (
	PathStatus         = "/v1/status"          // GET: Status
	PathPolicy         = "/v1/policy"          // GET: PolicyInfo (the policy in force)
	PathPolicyValidate = "/v1/policy/validate" // POST policy YAML: ValidateResult
	PathPolicyDiff     = "/v1/policy/diff"     // POST policy YAML: policy.Diff against the policy in force
	PathPolicyApply    = "/v1/policy/apply"    // POST policy YAML: ApplyResult
	PathPolicyDevices  = "/v1/policy/devices/" // PUT .../NAME device YAML, DELETE .../NAME: ApplyResult
	PathExplain        = "/v1/explain"         // POST ExplainRequest: policy.Explanation
	PathDevices        = "/v1/devices"         // GET: []Device
	PathFlows          = "/v1/flows"           // GET ?device=NAME&limit=N: []Flow (the flow table)
	PathEvents         = "/v1/events"          // GET ?follow=1&device=&reason=&direction=&limit=: NDJSON Events
	PathAudit          = "/v1/audit"           // GET: []AuditRecord (the audit log, oldest first)
)

// HeaderFilename carries the name of the policy file a POSTed policy came from, so that errors
// name it ("policy.yaml:12:7: ...").
const HeaderFilename = "X-Ztgate-Filename"

// Error kinds (Error.Kind).
const (
	KindInvalidPolicy = "invalid_policy" // the policy does not parse or validate (Fields says where)
	KindRejected      = "rejected"       // a valid policy that cannot be enforced (capacity, unknown port)
	KindBadRequest    = "bad_request"    // a malformed request
	KindForbidden     = "forbidden"      // the caller's uid/gid is not allowed
	KindNotFound      = "not_found"      // no such device, no policy yet, ...
	KindUnavailable   = "unavailable"    // the agent is not ready
	KindInternal      = "internal"
)

// Error is the body of every non-2xx response.
type Error struct {
	Status  int          `json:"-"`
	Kind    string       `json:"kind"`
	Message string       `json:"message"`
	Fields  []FieldError `json:"fields,omitempty"`
}

// FieldError is one problem in a policy document, located in its file.
type FieldError struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (e FieldError) String() string {
	return (&policy.FieldError{File: e.File, Line: e.Line, Col: e.Column, Path: e.Field, Msg: e.Message}).Error()
}

// Error returns the message, then each field error on its own line.
func (e *Error) Error() string {
	if len(e.Fields) == 0 {
		return e.Message
	}
	lines := make([]string, 0, len(e.Fields)+1)
	if e.Message != "" {
		lines = append(lines, e.Message)
	}
	for _, f := range e.Fields {
		lines = append(lines, f.String())
	}
	return strings.Join(lines, "\n")
}

// FieldErrors converts the errors of policy.Parse/Validate into their wire form.
func FieldErrors(err error) []FieldError {
	var out []FieldError
	add := func(fe *policy.FieldError) {
		out = append(out, FieldError{File: fe.File, Line: fe.Line, Column: fe.Col, Field: fe.Path, Message: fe.Msg})
	}
	switch e := err.(type) {
	case policy.Errors:
		for _, fe := range e {
			add(fe)
		}
	case *policy.FieldError:
		add(e)
	}
	return out
}

// Status is the agent's state.
type Status struct {
	Version    string      `json:"version"`
	PID        int         `json:"pid"`
	Started    time.Time   `json:"started"`
	Ready      bool        `json:"ready"`
	Policy     PolicyMeta  `json:"policy"`
	Interfaces []Interface `json:"interfaces"`
	Maps       []MapUsage  `json:"maps"`
	Flows      *FlowStats  `json:"flows,omitempty"` // nil: the flow table could not be read
	Events     EventStats  `json:"events"`
	// Damage lists what the agent found damaged in its state directory at start ("part:
	// problem"): it enforces fail-closed and reports it until a policy is applied.
	Damage []string `json:"damage,omitempty"`
}

// PolicyMeta identifies the policy in force. Revision 0: none (the datapath drops everything
// as no_policy).
type PolicyMeta struct {
	Revision  uint64    `json:"revision"`
	Name      string    `json:"name,omitempty"`
	Hash      string    `json:"hash,omitempty"` // sha256 of the applied YAML, hex
	AppliedAt time.Time `json:"applied_at,omitzero"`
	Devices   int       `json:"devices"`
	Segments  int       `json:"segments"`
}

// Interface is one protected interface (or a pattern of the configuration that matches none).
type Interface struct {
	Name     string    `json:"name"`
	Ifindex  int       `json:"ifindex"`
	Mode     string    `json:"mode"`     // native, generic, none, unknown
	Attached bool      `json:"attached"` // the link runs this agent's program
	State    string    `json:"state"`    // attached, absent (attached when it appears), failed, degraded (see Error)
	Since    time.Time `json:"since,omitzero"`
	Attaches uint64    `json:"attaches"` // attaches by this agent: more than one after a re-creation or a removal
	Repairs  uint64    `json:"repairs"`  // program found removed and attached again, or link pin restored
	Error    string    `json:"error,omitempty"`
}

// MapUsage is the fill level of one map.
type MapUsage struct {
	Map      string `json:"map"`
	Entries  int    `json:"entries"`
	Capacity int    `json:"capacity"`
}

// FlowStats is the fill level of the flow table: the connections the policy allowed, whose
// replies pass without a rule of their own.
type FlowStats struct {
	Entries  int `json:"entries"`
	Capacity int `json:"capacity"`
	Quota    int `json:"quota"`   // flows one device may hold
	Devices  int `json:"devices"` // devices holding at least one flow
	// Top lists the devices holding the most flows, most first.
	Top []DeviceFlows `json:"top,omitempty"`
}

// DeviceFlows is how many flows one device holds.
type DeviceFlows struct {
	Device string `json:"device,omitempty"` // empty: no device of the policy in force has this id
	DevID  uint32 `json:"dev_id"`
	Flows  int    `json:"flows"`
}

// Flow is one connection of the flow table, from the endpoint that opened it.
type Flow struct {
	Opener    string        `json:"opener"`    // address:port (ICMP echo: the identifier as port)
	Responder string        `json:"responder"` // address:port
	Proto     string        `json:"proto"`     // tcp, udp, icmp, icmpv6 or the protocol number
	Direction string        `json:"direction"` // from_device: a device opened it; to_device: opened toward one
	Device    string        `json:"device,omitempty"`
	DevID     uint32        `json:"dev_id"`   // the device charged for it
	Revision  uint64        `json:"revision"` // the policy revision that last allowed it
	Idle      time.Duration `json:"idle_ns"`  // since its last packet, either way
}

// EventStats counts events: Emitted, Lost (ring buffer full) and Suppressed (per-(device,
// reason) limit) by the datapath; Read (decoded by the agent) and Dropped (not delivered to
// a slow stream consumer) by the agent.
type EventStats struct {
	Emitted    uint64 `json:"emitted"`
	Lost       uint64 `json:"lost"`
	Suppressed uint64 `json:"suppressed"`
	Read       uint64 `json:"read"`
	Dropped    uint64 `json:"dropped"`
}

// PolicyInfo is the policy in force and its YAML (valid input to apply).
type PolicyInfo struct {
	PolicyMeta
	YAML string `json:"yaml"`
}

// ValidateResult describes a valid policy.
type ValidateResult struct {
	Name     string `json:"name"`
	Hash     string `json:"hash"`
	Devices  int    `json:"devices"`
	Segments int    `json:"segments"`
}

// ApplyResult reports an accepted apply.
type ApplyResult struct {
	OldRevision uint64        `json:"old_revision"`
	NewRevision uint64        `json:"new_revision"`
	Hash        string        `json:"hash"`
	Duration    time.Duration `json:"duration_ns"` // compile + write + flip
	Changes     policy.Diff   `json:"changes"`
}

// ExplainRequest is the body of PathExplain.
type ExplainRequest = policy.Query

// Device is one device of the policy in force with its counters.
type Device struct {
	Name     string    `json:"name"`
	ID       uint32    `json:"id"`
	Segment  string    `json:"segment,omitempty"`
	MAC      string    `json:"mac"`
	IPv4     []string  `json:"ipv4,omitempty"`
	IPv6     []string  `json:"ipv6,omitempty"`
	Port     string    `json:"port,omitempty"`
	State    string    `json:"state"` // enforce, audit, quarantined
	Allowed  Traffic   `json:"allowed"`
	Dropped  Traffic   `json:"dropped"`
	Audited  Traffic   `json:"audited"` // would have been dropped (audit mode)
	Inbound  Verdicts  `json:"inbound"` // frames toward the device (Allowed, Dropped, Audited: sent by it)
	Flows    int       `json:"flows"`   // connections of the flow table charged to the device
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Verdicts counts frames by verdict.
type Verdicts struct {
	Allowed Traffic `json:"allowed"`
	Dropped Traffic `json:"dropped"`
	Audited Traffic `json:"audited"`
}

// Traffic is a packet and byte count.
type Traffic struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Event is one sampled drop or audit event with the frame's first bytes.
type Event struct {
	Time      time.Time `json:"time"`
	Device    string    `json:"device,omitempty"` // empty: not a known device
	DevID     uint32    `json:"dev_id"`
	Direction string    `json:"direction"` // from_device: came in on Interface; to_device: leaving by it
	Interface string    `json:"interface,omitempty"`
	Ifindex   uint32    `json:"ifindex"`
	Revision  uint64    `json:"revision"`
	Verdict   string    `json:"verdict"`
	Reason    string    `json:"reason"`
	FrameLen  int       `json:"frame_len"` // length on the wire
	Frame     []byte    `json:"frame"`     // captured prefix (base64 in JSON)
}

// AuditRecord is one entry of the agent's hash-chained audit log.
type AuditRecord struct {
	Seq         uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	Action      string    `json:"action"` // apply, device, connect
	UID         int64     `json:"uid"`    // -1: unknown
	GID         int64     `json:"gid"`
	PID         int64     `json:"pid"`
	OldRevision uint64    `json:"old_revision"`
	NewRevision uint64    `json:"new_revision"`
	PolicyHash  string    `json:"policy_hash,omitempty"`
	Change      string    `json:"change,omitempty"` // a device action's change: "put device NAME", "delete device NAME"
	Result      string    `json:"result"`           // accepted, rejected, refused
	Error       string    `json:"error,omitempty"`
	Prev        string    `json:"prev"` // hash of the previous record (hex), "" for the first
	Hash        string    `json:"hash"` // sha256 over this record with Hash empty, hex
}

// Audit results.
const (
	ResultAccepted = "accepted"
	ResultRejected = "rejected"
	ResultRefused  = "refused"
)

// Audit actions.
const (
	ActionApply   = "apply"
	ActionDevice  = "device" // a one-device change (put or delete)
	ActionConnect = "connect"
	ActionRestore = "restore" // the agent put in force at start a revision the log did not end with
)

// ErrUnreachable wraps every failure to reach the agent (no socket, connection refused).
type ErrUnreachable struct {
	Socket string
	Err    error
}

func (e *ErrUnreachable) Error() string {
	return fmt.Sprintf("agent unreachable at %s: %v", e.Socket, e.Err)
}

func (e *ErrUnreachable) Unwrap() error { return e.Err }

// DiffResult is what an apply would change, against the revision in force.
type DiffResult struct {
	Revision uint64      `json:"revision"` // the revision compared against
	Diff     policy.Diff `json:"diff"`
}

// Explanation is policy.Explanation, evaluated against the revision in force.
type Explanation struct {
	Revision uint64 `json:"revision"`
	policy.Explanation
}
