// Package benchbpf holds the benchmark build of the ztgate datapath (cold.c): bpf/ztgate.c
// compiled with -DZT_BENCH_COLD, so that every frame is rewritten to come from the next device
// of the fleet before the normal decision, plus a control program that does the same rewrite
// and one bare hash lookup. The generated files are committed, like bpf's.
package benchbpf

//go:generate go tool bpf2go -no-strip -no-global-types -target bpfel ZtgateCold cold.c -- -O2 -g -Wall -Werror -DZT_BENCH_COLD
