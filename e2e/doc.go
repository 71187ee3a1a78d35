// Package e2e holds ztgate's end-to-end tests: the real XDP program attached (native and
// generic) to the gateway ports of a testenv topology, real sockets in device and upstream
// namespaces, and what the receivers actually got.
package e2e
