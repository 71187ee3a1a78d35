package testenv

import (
	"fmt"
	"os"
	"testing"
)

// RequirePrivEnv is the environment variable that turns the skip of [RequirePriv] into a
// failure: CI sets ZTGATE_REQUIRE_PRIV=1 so privileged tests cannot silently not run.
const RequirePrivEnv = "ZTGATE_REQUIRE_PRIV"

// RequirePriv skips the test when the process is not root (it needs CAP_NET_ADMIN to build
// namespaces and veths and CAP_BPF to load XDP programs), or fails it when
// ZTGATE_REQUIRE_PRIV=1. Every privileged test calls it first.
func RequirePriv(t testing.TB) {
	t.Helper()
	euid := os.Geteuid()
	if euid == 0 {
		return
	}
	reason := fmt.Sprintf("needs root (CAP_NET_ADMIN, CAP_BPF): running as euid %d; run the tests as root", euid)
	if os.Getenv(RequirePrivEnv) == "1" {
		t.Fatalf("%s (%s=1 forbids skipping)", reason, RequirePrivEnv)
	}
	t.Skip(reason)
}
