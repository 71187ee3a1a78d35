package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// ICMPType is one entry of a rule's icmp list: a message type as a name ("echo-request") or a
// number 0-255, optionally followed by "/CODE" with CODE 0-255 ("3/4", "destination-unreachable/3").
// Names depend on the rule's proto: icmp takes the RFC 792 names, icmpv6 the RFC 4443 and 4861 ones.
type ICMPType string

// icmpName is one named ICMP or ICMPv6 message type.
type icmpName struct {
	name string
	typ  uint8
}

// icmp4Names are the ICMP (proto 1) message types a rule may name.
var icmp4Names = []icmpName{
	{"echo-reply", 0},
	{"destination-unreachable", 3},
	{"source-quench", 4},
	{"redirect", 5},
	{"echo-request", 8},
	{"router-advertisement", 9},
	{"router-solicitation", 10},
	{"time-exceeded", 11},
	{"parameter-problem", 12},
	{"timestamp", 13},
	{"timestamp-reply", 14},
}

// icmp6Names are the ICMPv6 (proto 58) message types a rule may name.
var icmp6Names = []icmpName{
	{"destination-unreachable", 1},
	{"packet-too-big", 2},
	{"time-exceeded", 3},
	{"parameter-problem", 4},
	{"echo-request", 128},
	{"echo-reply", 129},
	{"router-solicitation", 133},
	{"router-advertisement", 134},
	{"neighbor-solicitation", 135},
	{"neighbor-advertisement", 136},
	{"redirect", 137},
}

// icmpNames are the names of proto's message types (nil unless proto is icmp or icmpv6).
func icmpNames(proto uint8) []icmpName {
	switch proto {
	case ProtoICMP:
		return icmp4Names
	case ProtoICMPv6:
		return icmp6Names
	}
	return nil
}

// lookupICMP is the type named name in names.
func lookupICMP(names []icmpName, name string) (uint8, bool) {
	for _, n := range names {
		if n.name == name {
			return n.typ, true
		}
	}
	return 0, false
}

// ICMPMatch is what one icmp entry matches: a message type, with every code or with one code.
type ICMPMatch struct {
	Type    uint8
	Code    uint8
	AnyCode bool
}

// Range is the range of the datapath's 16-bit ICMP key (type<<8 | code) that m matches.
func (m ICMPMatch) Range() PortRange {
	lo := uint16(m.Type) << 8
	if m.AnyCode {
		return PortRange{Lo: lo, Hi: lo | 0xff}
	}
	lo |= uint16(m.Code)
	return PortRange{Lo: lo, Hi: lo}
}

// text spells m for proto: the type's name where it has one, else its number, then "/CODE".
func (m ICMPMatch) text(proto uint8) string {
	s := strconv.Itoa(int(m.Type))
	for _, n := range icmpNames(proto) {
		if n.typ == m.Type {
			s = n.name
			break
		}
	}
	if !m.AnyCode {
		s += "/" + strconv.Itoa(int(m.Code))
	}
	return s
}

// ParseICMPType parses an icmp entry for the protocol proto (ProtoICMP or ProtoICMPv6).
func ParseICMPType(s string, proto uint8) (ICMPMatch, error) {
	names := icmpNames(proto)
	if names == nil {
		return ICMPMatch{}, fmt.Errorf("icmp types need proto icmp or icmpv6")
	}
	typ, code, hasCode := strings.Cut(s, "/")
	m := ICMPMatch{AnyCode: !hasCode}
	t, ok := lookupICMP(names, typ)
	switch {
	case ok:
		m.Type = t
	case isDigits(typ):
		n, err := icmpNumber(typ, "type", s)
		if err != nil {
			return ICMPMatch{}, err
		}
		m.Type = n
	default:
		return ICMPMatch{}, unknownICMP(typ, s, proto)
	}
	if hasCode {
		if !isDigits(code) {
			return ICMPMatch{}, fmt.Errorf("icmp code %s in %s is not a number 0-255", quote(code), quote(s))
		}
		n, err := icmpNumber(code, "code", s)
		if err != nil {
			return ICMPMatch{}, err
		}
		m.Code = n
	}
	return m, nil
}

// icmpNumber parses the decimal type or code digits of the entry s.
func icmpNumber(digits, what, s string) (uint8, error) {
	if len(digits) > 1 && digits[0] == '0' {
		return 0, fmt.Errorf("icmp %s %s in %s has a leading zero, remove it", what, quote(digits), quote(s))
	}
	n, err := strconv.ParseUint(digits, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("icmp %s %s in %s is out of range 0-255", what, clip(digits), quote(s))
	}
	return uint8(n), nil
}

// unknownICMP is the error for typ, the type part of the entry s, which names no type of proto.
func unknownICMP(typ, s string, proto uint8) error {
	family, other, otherNames := "icmp", "icmpv6", icmp6Names
	if proto == ProtoICMPv6 {
		family, other, otherNames = "icmpv6", "icmp", icmp4Names
	}
	if _, ok := lookupICMP(otherNames, typ); ok {
		return fmt.Errorf("icmp type %s in %s is an %s type, not an %s one", quote(typ), quote(s), other, family)
	}
	names := icmpNames(proto)
	list := make([]string, len(names))
	for i, n := range names {
		list[i] = n.name
	}
	return fmt.Errorf("%s is not an %s type, use a number 0-255 or one of %s", quote(typ), family,
		strings.Join(list, ", "))
}

// icmpRanges are the ranges of the datapath's ICMP key that r allows for proto, or nil when r
// lists no icmp types (every type) or proto is not icmp or icmpv6.
func (r *Rule) icmpRanges(proto uint8) ([]PortRange, error) {
	if len(r.ICMP) == 0 || icmpNames(proto) == nil {
		return nil, nil
	}
	out := make([]PortRange, len(r.ICMP))
	for i, t := range r.ICMP {
		m, err := ParseICMPType(string(t), proto)
		if err != nil {
			return nil, err
		}
		out[i] = m.Range()
	}
	return out, nil
}

// MarshalYAML writes a bare type number as an integer (8) and anything else as a string.
func (t ICMPType) MarshalYAML() (any, error) {
	s := string(t)
	if isDigits(s) && (len(s) == 1 || s[0] != '0') {
		if n, err := strconv.ParseUint(s, 10, 8); err == nil {
			return int(n), nil
		}
	}
	return s, nil
}
