// Package bpf holds the ztgate XDP datapath (C sources in this directory) and the Go bindings
// that bpf2go generates from it: the compiled object, its maps and programs, and the map key and
// value types. The generated files are committed; `make check-generated` proves they match.
// Run `make generate`, not go generate alone: it pins the clang (BPF2GO_CC) and passes the
// multiarch include directory of the build machine (BPF2GO_CFLAGS).
package bpf

//go:generate go tool bpf2go -no-strip -target bpfel -type zt_in6 -type zt_mac -type zt_verdict -type zt_reason -type zt_dev_flags -type zt_config_flags -type zt_sel_kind -type zt_rule_flags -type zt_addr_kind -type zt_dev_key -type zt_dev_rec -type zt_addr_key -type zt_addr_val -type zt_prefix_key -type zt_prefix_val -type zt_rule_key -type zt_rule_val -type zt_config -type zt_frag_key -type zt_frag_val -type zt_counter -type zt_dev_stats -type zt_event_stats -type zt_limit_slot -type zt_event -type zt_flow_key -type zt_flow_val -type zt_flow_flags -type zt_dir -type zt_flow_kind Ztgate ztgate.c -- -O2 -g -Wall -Werror
