package e2e

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/agent"
)

// unitCaps reads the CapabilityBoundingSet of the systemd unit.
func unitCaps(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../deploy/systemd/ztgate-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("the unit sets no CapabilityBoundingSet")
	return nil
}

// setpriv runs the agent with only caps (root uid, no other capability can be gained).
func setpriv(caps []string) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return []string{"setpriv", "--bounding-set=" + set, "--inh-caps=-all", "--no-new-privs", "--"}
}

// without is caps less c.
func without(caps []string, c string) []string {
	var out []string
	for _, x := range caps {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}

// TestAgentCapabilities: the agent does its whole job with exactly the capabilities of the
// systemd unit (first start, policy apply, restart adopting the pins, status and metrics), and
// each of them is needed: without it, the agent fails.
func TestAgentCapabilities(t *testing.T) {
	caps := unitCaps(t)
	l := newLab(t, func(c *agent.Config) { c.SocketGroup = strconv.Itoa(4300) })
	tp := l.tp
	l.wrap = setpriv(caps)
	v1 := l.run(basePolicy(t, tp))
	f := l.probeFlows(10*time.Millisecond, "with the unit's capabilities")
	l.agent.stop()
	l.start(v1)
	st := l.status()
	checkAttached(t, st, len(tp.Devices))
	if st.Policy.Revision != 1 {
		t.Fatalf("restart: revision %d", st.Policy.Revision)
	}
	for _, m := range st.Maps {
		if m.Map == "zt_devices" && m.Entries != 4 {
			t.Errorf("status with the unit's capabilities: %+v", st.Maps)
		}
	}
	if code, _ := l.scrape("/metrics"); code != 200 {
		t.Errorf("metrics: %d", code)
	}
	if strings.Contains(l.agent.log.String(), "level=WARN") {
		t.Errorf("warnings with the unit's capabilities:\n%s", l.agent.log.String())
	}
	l.agent.stop()

	// Each capability is needed: without it the agent fails to start (and enforcement, left
	// by the previous agent, goes on).
	for _, c := range caps {
		l.wrap = setpriv(without(caps, c))
		log := l.startFails(v1)
		t.Logf("without %s: %s", c, firstLine(log))
		if !strings.Contains(log, "not permitted") && !strings.Contains(log, "permission denied") {
			t.Errorf("without %s the agent failed, but not for lack of a permission:\n%s", c, log)
		}
		f.waitAllowed("agent without " + c)
	}
	f.checkNoLeak("capabilities")
}

// firstLine is the first "ztgate:" line of the agent's output (its error), else all of it.
func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "ztgate:") {
			return line
		}
	}
	return strings.TrimSpace(s)
}
