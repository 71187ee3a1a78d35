package live

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ztgate/ztgate/bench/core"
)

// sec is the section's name in the report.
const sec = "live"

// reporter turns the per-round times of a measurement into rates, receiver costs, ratios and
// target verdicts.
type reporter struct {
	cfg     *core.Config
	r       *core.Report
	vs      []*variant
	m       *measurement
	skipped map[string]string
	sender  string
	quick   string      // the targets' note prefix in a quick run
	gen     []float64   // the generator's CPU time per frame before and after each round
	cost    [][]float64 // per variant, per round: the receiver's cost
	idx     map[string]int
	drop    []float64 // XDP_DROP's receiver cost, per round (nil if not measured)
	dropNs  float64
}

// writeReport reports the measurement m of the variants vs made with sender.
func writeReport(cfg *core.Config, r *core.Report, vs []*variant, m *measurement, skipped map[string]string,
	sender string) {
	defer r.TagSender(sec, sender)
	p := &reporter{cfg: cfg, r: r, vs: vs, m: m, skipped: skipped, sender: sender, idx: map[string]int{}}
	if cfg.Quick {
		p.quick = fmt.Sprintf("quick (1 round, %d variants): figures not meant to be read; ", len(vs))
	}
	// Each round's receiver costs are taken against the mean of the generator's cost before and
	// after it.
	p.gen = append(slices.Clone(m.total[0]), m.genEnd)
	p.cost = make([][]float64, len(vs))
	for i, v := range vs {
		p.idx[v.key] = i
	}
	for i, v := range vs {
		if i == 0 || v.key == inGen {
			continue
		}
		for k := range m.rounds {
			if v.inbound {
				// The inbound sender's own cost, measured in the same round.
				if g, ok := p.idx[inGen]; ok {
					p.cost[i] = append(p.cost[i], m.total[i][k]-m.total[g][k])
				}
				continue
			}
			p.cost[i] = append(p.cost[i], m.total[i][k]-(p.gen[k]+p.gen[k+1])/2)
		}
	}
	p.drop = p.get("xdpdrop")
	p.dropNs = core.Median(p.drop)
	p.addCosts()
	p.addDecisions()
	p.addInbound()
	subj := p.addPeerRatios()
	if subj == "" || p.drop == nil {
		return
	}
	p.checkTargets(subj)
}

// get is the receiver cost of the variant key per round, nil if it was not measured.
func (p *reporter) get(key string) []float64 {
	if i, ok := p.idx[key]; ok {
		return p.cost[i]
	}
	return nil
}

// name is the variant key's name in the report.
func (p *reporter) name(key string) string { return p.vs[p.idx[key]].name }

// addCosts reports every variant's rate and receiver cost.
func (p *reporter) addCosts() {
	for i, v := range p.vs {
		ns := p.m.total[i]
		if i == 0 {
			ns = p.gen
		}
		rate := make([]float64, len(ns))
		for k, x := range ns {
			rate[k] = 1e3 / x // Mpps on one CPU
		}
		note := v.note
		if v.lost > 0.001 {
			note = strings.TrimPrefix(note+fmt.Sprintf("; %.1f%% lost in transit (ring full): cost understated",
				100*v.lost), "; ")
		}
		if i == 0 {
			if p.sender == core.LiveSenderAFPacket {
				note = "AF_PACKET to an ifb sink that frees the frames at once: the sender's own cost"
			}
			note = fmt.Sprintf("%s; CPU %d, %d rounds x %s of CPU time; sender %s", note, p.m.cpu, p.m.rounds, p.m.dur,
				senderDesc(p.sender))
		}
		p.r.Add(core.Result{Section: sec, Name: v.name + ": rate", Value: core.Median(rate), Unit: "Mpps/CPU",
			Spread: core.Spread(rate), Note: note})
		if i == 0 || v.key == inGen {
			continue
		}
		if v.inbound {
			p.addInboundCost(i, v)
			continue
		}
		res := core.Result{Section: sec, Name: v.name + ": receiver cost", Value: core.Median(p.cost[i]), Unit: "ns/pkt"}
		if v.key == "xdpdrop" {
			res.Spread = core.Spread(p.cost[i])
			res.Note = "CPU ns/frame minus the generator's alone: the veth's receive, the program, the frame's free"
		} else if p.drop != nil {
			rs := core.Ratios(p.cost[i], p.drop)
			res.Ratio, res.Base, res.Spread = core.Median(rs), "XDP_DROP", core.Spread(rs)
		}
		p.r.Add(res)
	}
}

// addDecisions reports ztgate's decision (what it adds to XDP_DROP), live and with hot caches.
func (p *reporter) addDecisions() {
	hot := p.m.hot
	for _, v := range p.vs {
		h, ok := hot[v.key]
		if v.zt == nil || v.stack || v.inbound || p.drop == nil || !ok {
			continue
		}
		live := core.Median(p.cost[p.idx[v.key]]) - p.dropNs
		hd := h - hot["xdpdrop"]
		res := core.Result{Section: sec, Name: v.name + ": decision over XDP_DROP", Value: live, Unit: "ns/pkt",
			Note: fmt.Sprintf("hot caches (BPF_PROG_TEST_RUN, same frame, minus XDP_DROP's): %.0f ns", hd)}
		if hd > 0 {
			res.Ratio, res.Base = live/hd, "hot caches"
		}
		p.r.Add(res)
	}
}

// addPeerRatios reports the peers' receiver cost over ztgate's, and returns the subject of the
// targets: ztgate's most expensive drop of a source it must not accept (unknown, or spoofed:
// the frames the netfilter allow-lists drop too).
func (p *reporter) addPeerRatios() string {
	subj := ""
	for _, v := range p.vs {
		if v.drop && p.drop != nil && (subj == "" ||
			core.Median(core.Ratios(p.cost[p.idx[v.key]], p.drop)) > core.Median(core.Ratios(p.get(subj), p.drop))) {
			subj = v.key
		}
	}
	peers := []string{"xdpfilter", "nftset", "nftlinear", "iptlegacy", "iptnft"}
	for _, zk := range []string{subj, "zt1m-norule"} {
		zt := p.get(zk)
		if zk == "" || zt == nil {
			continue
		}
		for _, pk := range peers {
			if c := p.get(pk); c != nil {
				rs := core.Ratios(c, zt)
				p.r.Add(core.Result{Section: sec, Name: p.name(pk) + " / " + p.name(zk), Value: core.Median(rs), Unit: "x",
					Spread: core.Spread(rs), Note: "receiver cost, per-round ratio"})
			}
		}
	}
	if a, s := p.get("zt1k-allow"), p.get("stack"); a != nil && s != nil {
		rs := core.Ratios(a, s)
		p.r.Add(core.Result{Section: sec, Name: "ztgate 1k allowed + stack / stack alone", Value: core.Median(rs),
			Unit: "x", Spread: core.Spread(rs),
			Note: "receiver cost, per-round ratio: ztgate's share of an accepted packet"})
	}
	return subj
}

// checkTargets records the targets on subj, the variant addPeerRatios picked.
func (p *reporter) checkTargets(subj string) {
	zt := p.get(subj)
	ztNs := core.Median(zt)
	about := fmt.Sprintf("%s%s (worst source drop measured) %.0f ns, XDP_DROP %.0f ns", p.quick, p.name(subj), ztNs,
		p.dropNs)
	worst := core.Median(core.Ratios(zt, p.drop))
	note := about
	if worst > vsDropMax {
		note += p.dropNote(subj)
	}
	p.r.Check(sec, fmt.Sprintf("ztgate drop path <= %.1fx XDP_DROP (receiver cost)", vsDropMax), worst, "<=",
		vsDropMax, "x", note)
	p.cheaper(zt, about, "nftset", fmt.Sprintf("ztgate drop path >= %dx cheaper than the nftables 1k set",
		vsNftSetMin), vsNftSetMin, "")
	ipt := "; each iptables flavour has a target of its own"
	if l, n := p.get("iptlegacy"), p.get("iptnft"); l != nil && n != nil {
		cheap := "iptables-legacy"
		if core.Median(n) < core.Median(l) {
			cheap = "iptables-nft"
		}
		ipt += ", the cheaper here: " + cheap
	}
	p.cheaper(zt, about, "iptlegacy", fmt.Sprintf("ztgate drop path >= %dx cheaper than iptables-legacy, 1,000 rules",
		vsIptablesMin), vsIptablesMin, ipt)
	p.cheaper(zt, about, "iptnft", fmt.Sprintf("ztgate drop path >= %dx cheaper than iptables-nft, 1,000 rules",
		vsIptablesMin), vsIptablesMin, ipt)
}

// dropNote says, for a drop-path target missed, what ztgate's decision adds to XDP_DROP.
func (p *reporter) dropNote(subj string) string {
	hot := p.m.hot
	live, hc := core.Median(p.get(subj))-p.dropNs, hot[subj]-hot["xdpdrop"]
	note := fmt.Sprintf("; ztgate's decision adds %.0f ns live, %.0f ns with hot caches (BPF_PROG_TEST_RUN): "+
		"the decision itself (policy-slot, device and address-binding lookups, per-CPU counters, the event "+
		"limiter's budget slot and timestamp%s)", live, hc, safeRETNote())
	if hc > 0 && live > 1.5*hc {
		note += ", inflated on live traffic by caches and branch predictors cold after the veth and page-pool code"
	}
	note += fmt.Sprintf("; %.1fx leaves %.0f ns for a decision", vsDropMax, (vsDropMax-1)*p.dropNs)
	if xf := p.get("xdpfilter"); xf != nil {
		note += fmt.Sprintf(" (xdp-filter's 4 lookups: %.0f ns, %.1fx)", core.Median(xf)-p.dropNs,
			core.Median(core.Ratios(xf, p.drop)))
	}
	return note
}

// cheaper records the target "ztgate (zt) is at least limit times cheaper than the peer key".
func (p *reporter) cheaper(zt []float64, about, key, desc string, limit float64, extra string) {
	c := p.get(key)
	if c == nil {
		if !p.cfg.Quick {
			why := p.skipped[key]
			if why == "" {
				why = "not measured"
			}
			p.r.Check(sec, desc, math.NaN(), ">=", limit, "x", why)
		}
		return
	}
	m := core.Median(core.Ratios(c, zt))
	note := fmt.Sprintf("%s; %s %.0f ns%s", about, p.name(key), core.Median(c), extra)
	if m < limit {
		note += fmt.Sprintf("; against the median peer cost, %.0fx needs ztgate at <= %.0f ns, %.0f ns over XDP_DROP",
			limit, core.Median(c)/limit, core.Median(c)/limit-p.dropNs)
	}
	if nr := p.get("zt1m-norule"); nr != nil {
		note += fmt.Sprintf("; the whole decision of a known device (%s) costs %.0f ns: %.1fx", p.name("zt1m-norule"),
			core.Median(nr), core.Median(core.Ratios(c, nr)))
	}
	p.r.Check(sec, desc, m, ">=", limit, "x", note)
}
