package sigma

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// ErrCorrelation reports a correlation rule that cannot be evaluated.
var ErrCorrelation = errors.New("invalid correlation")

// CorrelationHit is one firing of a correlation rule.
type CorrelationHit struct {
	Rule *Rule
	// Group holds the group-by values (after alias resolution) of the firing group.
	Group map[string]string
	// Value is the event count, distinct count, sum, average or percentage that met the condition.
	Value float64
	// Start and End bound the events that made the hit.
	Start, End time.Time
}

// CorrelatorOptions bounds a Correlator.
type CorrelatorOptions struct {
	// MaxGroups caps live groups per correlation rule (default 100000); events of new groups beyond it are counted in Dropped.
	MaxGroups int
}

// Correlator evaluates correlation rules over a time-ordered stream of base
// rule matches. It is not safe for concurrent use; give each stream its own.
//
// Semantics chosen where the specification is silent: a group fires once
// when its sliding window meets a lower-bound condition (gt/gte) and then
// starts afresh; conditions with an upper bound (lt/lte/eq/neq) are decided
// on tumbling windows when they close (next event of the group or Flush);
// value_percentile judges the share, in percent, of window events that carry
// the latest event's value; temporal without a condition needs every rule.
type Correlator struct {
	opts  CorrelatorOptions
	corrs []*corrState
	// byRef maps a base rule id or name to the correlation steps it feeds.
	byRef map[string][]corrStep
	// Dropped counts events ignored because MaxGroups was reached.
	Dropped uint64
	feeds   uint64
	now     time.Time
}

type corrStep struct {
	c     *corrState
	index int    // position in the correlation's rules list
	name  string // the referenced rule's name, for aliases
}

type corrState struct {
	rule   *Rule
	c      *Correlation
	span   time.Duration
	groups map[string]*group
	// tumbling is set when the condition has an upper bound (lt/lte/eq/neq):
	// those can only be decided when the window closes. value_percentile is
	// always sliding: it judges the share of the latest event's value.
	tumbling bool
}

type sample struct {
	t   time.Time
	val string
	num float64
}

type group struct {
	vals    map[string]string
	samples []sample
	start   time.Time
	last    time.Time
	// temporal: last time each rule index was seen; ordered: chain start per step.
	seen  []time.Time
	chain []time.Time
}

// NewCorrelator prepares the correlation rules among rules; the detection
// rules in the same slice resolve `name` references and aliases.
func NewCorrelator(rules []*Rule, opts CorrelatorOptions) (*Correlator, error) {
	if opts.MaxGroups <= 0 {
		opts.MaxGroups = 100000
	}
	co := &Correlator{opts: opts, byRef: map[string][]corrStep{}}
	// names resolves both ids and names to the canonical reference (the id when present).
	canon := map[string]string{}
	nameOf := map[string]string{}
	for _, r := range rules {
		key := r.ID
		if key == "" {
			key = r.Name
		}
		if key == "" {
			continue
		}
		if r.ID != "" {
			canon[r.ID] = key
		}
		if r.Name != "" {
			canon[r.Name] = key
		}
		nameOf[key] = r.Name
	}
	for _, r := range rules {
		if r.Correlation == nil {
			continue
		}
		c := r.Correlation
		if c.SpanSeconds <= 0 {
			return nil, fmt.Errorf("%w: %q has no timespan", ErrCorrelation, r.Title)
		}
		cs := &corrState{rule: r, c: c, span: time.Duration(c.SpanSeconds) * time.Second, groups: map[string]*group{}}
		for op := range c.Condition.Ops {
			if c.Type != ValuePercentile && (op == "lt" || op == "lte" || op == "eq" || op == "neq") {
				cs.tumbling = true
			}
		}
		if (c.Type == Temporal || c.Type == TemporalOrdered) && len(c.Rules) < 2 && len(c.Condition.Ops) == 0 {
			return nil, fmt.Errorf("%w: %q: %s needs at least two rules", ErrCorrelation, r.Title, c.Type)
		}
		for i, ref := range c.Rules {
			key, ok := canon[ref]
			if !ok {
				key = ref // an unknown reference still works if the caller feeds it verbatim
			}
			co.byRef[key] = append(co.byRef[key], corrStep{c: cs, index: i, name: nameOf[key]})
		}
		for alias, m := range c.Aliases {
			for rn := range m {
				if _, ok := canon[rn]; !ok && !contains(c.Rules, rn) {
					return nil, fmt.Errorf("%w: %q: alias %q names unknown rule %q", ErrCorrelation, r.Title, alias, rn)
				}
			}
		}
		co.corrs = append(co.corrs, cs)
	}
	// Keep byRef consistent: alias entries must see steps added after them.
	for _, r := range rules {
		if r.ID != "" && r.Name != "" {
			co.byRef[r.Name] = co.byRef[r.ID]
		}
	}
	return co, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Feed records that the base rule ruleRef (its id or name) matched ev at t,
// and returns the correlations that fire. Events must arrive in time order;
// older events than the latest seen are evaluated at the latest time.
func (co *Correlator) Feed(ruleRef string, ev Event, t time.Time) []CorrelationHit {
	return co.feed(ruleRef, ev, t, 0)
}

func (co *Correlator) feed(ruleRef string, ev Event, t time.Time, depth int) []CorrelationHit {
	if t.Before(co.now) {
		t = co.now
	}
	co.now = t
	co.feeds++
	var hits []CorrelationHit
	if co.feeds%1024 == 0 {
		hits = append(hits, co.Flush(t)...)
	}
	steps := co.byRef[ruleRef]
	// Later steps first, so one event cannot complete two ordered steps.
	for i := len(steps) - 1; i >= 0; i-- {
		if h, ok := co.step(steps[i], ev, t); ok {
			hits = append(hits, h...)
		}
	}
	// Chained correlations: a hit is an event of the correlation rule itself.
	if depth < 8 {
		n := len(hits)
		for i := 0; i < n; i++ {
			h := hits[i]
			hev := MapEvent{Fields: map[string]any{}}
			for k, v := range h.Group {
				hev.Fields[k] = v
			}
			for _, ref := range []string{h.Rule.ID, h.Rule.Name} {
				if ref != "" && len(co.byRef[ref]) > 0 {
					hits = append(hits, co.feed(ref, hev, t, depth+1)...)
					break
				}
			}
		}
	}
	return hits
}

func (co *Correlator) step(st corrStep, ev Event, t time.Time) ([]CorrelationHit, bool) {
	cs := st.c
	c := cs.c
	vals := make(map[string]string, len(c.GroupBy))
	var kb strings.Builder
	for _, g := range c.GroupBy {
		f := g
		if m, ok := c.Aliases[g]; ok {
			if src, ok := m[st.name]; ok {
				f = src
			} else if src, ok := m[c.Rules[st.index]]; ok {
				f = src
			}
		}
		v, _ := ev.Field(f)
		s := ""
		if v != nil {
			s = valueString(v)
		}
		vals[g] = s
		kb.WriteString(s)
		kb.WriteByte(0)
	}
	key := kb.String()
	g := cs.groups[key]
	var out []CorrelationHit
	if g != nil && cs.tumbling && t.Sub(g.start) > cs.span {
		if h, ok := cs.evaluate(g, g.start.Add(cs.span)); ok {
			out = append(out, h)
		}
		delete(cs.groups, key)
		g = nil
	}
	if g == nil {
		if len(cs.groups) >= co.opts.MaxGroups {
			co.Dropped++
			return out, len(out) > 0
		}
		g = &group{vals: vals, start: t}
		if c.Type == Temporal {
			g.seen = make([]time.Time, len(c.Rules))
		}
		if c.Type == TemporalOrdered {
			g.chain = make([]time.Time, len(c.Rules))
		}
		cs.groups[key] = g
	}
	g.last = t
	switch c.Type {
	case Temporal:
		g.seen[st.index] = t
	case TemporalOrdered:
		if st.index == 0 {
			g.chain[0] = t
		} else if s := g.chain[st.index-1]; !s.IsZero() && t.Sub(s) <= cs.span {
			g.chain[st.index] = s
		}
	default:
		smp := sample{t: t}
		if c.Condition.Field != "" {
			v, _ := ev.Field(c.Condition.Field)
			if v == nil {
				// value_* over an absent field: the event carries nothing to aggregate.
				return out, len(out) > 0
			}
			smp.val = valueString(v)
			if f, ok := toFloat(v); ok {
				smp.num = f
			} else if c.Type == ValueSum || c.Type == ValueAvg {
				return out, len(out) > 0
			}
		}
		g.samples = append(g.samples, smp)
	}
	if cs.tumbling {
		return out, len(out) > 0
	}
	g.expire(t, cs.span)
	if h, ok := cs.evaluate(g, t); ok {
		out = append(out, h)
		// Fire once per burst: start a fresh window for the group.
		delete(cs.groups, key)
	}
	return out, len(out) > 0
}

func valueString(v any) string {
	if list, ok := v.([]any); ok {
		parts := make([]string, 0, len(list))
		for _, x := range list {
			if x != nil {
				parts = append(parts, toString(x))
			}
		}
		return strings.Join(parts, ",")
	}
	return toString(v)
}

// expire drops samples and sightings older than span before t.
func (g *group) expire(t time.Time, span time.Duration) {
	cut := t.Add(-span)
	i := 0
	for i < len(g.samples) && g.samples[i].t.Before(cut) {
		i++
	}
	if i > 0 {
		g.samples = append(g.samples[:0], g.samples[i:]...)
	}
	for k, s := range g.seen {
		if !s.IsZero() && s.Before(cut) {
			g.seen[k] = time.Time{}
		}
	}
	for k, s := range g.chain {
		if !s.IsZero() && s.Before(cut) {
			g.chain[k] = time.Time{}
		}
	}
	if len(g.samples) > 0 {
		g.start = g.samples[0].t
	}
}

func (cs *corrState) evaluate(g *group, end time.Time) (CorrelationHit, bool) {
	c := cs.c
	var v float64
	start := g.start
	switch c.Type {
	case EventCount:
		v = float64(len(g.samples))
	case ValueCount:
		seen := map[string]struct{}{}
		for _, s := range g.samples {
			seen[s.val] = struct{}{}
		}
		v = float64(len(seen))
	case ValueSum, ValueAvg:
		for _, s := range g.samples {
			v += s.num
		}
		if c.Type == ValueAvg && len(g.samples) > 0 {
			v /= float64(len(g.samples))
		}
	case ValuePercentile:
		// The share (in percent) of window events carrying the latest event's value.
		if len(g.samples) == 0 {
			return CorrelationHit{}, false
		}
		last := g.samples[len(g.samples)-1].val
		n := 0
		for _, s := range g.samples {
			if s.val == last {
				n++
			}
		}
		v = 100 * float64(n) / float64(len(g.samples))
	case Temporal:
		first := time.Time{}
		for _, s := range g.seen {
			if !s.IsZero() {
				v++
				if first.IsZero() || s.Before(first) {
					first = s
				}
			}
		}
		start = first
		if len(c.Condition.Ops) == 0 {
			if int(v) < len(c.Rules) {
				return CorrelationHit{}, false
			}
			return CorrelationHit{Rule: cs.rule, Group: g.vals, Value: v, Start: start, End: end}, true
		}
	case TemporalOrdered:
		last := g.chain[len(g.chain)-1]
		if last.IsZero() {
			return CorrelationHit{}, false
		}
		return CorrelationHit{Rule: cs.rule, Group: g.vals, Value: float64(len(c.Rules)), Start: last, End: end}, true
	}
	if !condHolds(c.Condition.Ops, v) {
		return CorrelationHit{}, false
	}
	return CorrelationHit{Rule: cs.rule, Group: g.vals, Value: v, Start: start, End: end}, true
}

func condHolds(ops map[string]float64, v float64) bool {
	for op, th := range ops {
		ok := false
		switch op {
		case "gt":
			ok = v > th
		case "gte":
			ok = v >= th
		case "lt":
			ok = v < th
		case "lte":
			ok = v <= th
		case "eq":
			ok = math.Abs(v-th) < 1e-9
		case "neq":
			ok = math.Abs(v-th) >= 1e-9
		}
		if !ok {
			return false
		}
	}
	return true
}

// Flush closes every window that ended by now: tumbling windows are
// evaluated and emitted, idle groups are dropped. Call it periodically (and
// at end of stream) so memory stays bounded by the timespan.
func (co *Correlator) Flush(now time.Time) []CorrelationHit {
	var hits []CorrelationHit
	for _, cs := range co.corrs {
		keys := make([]string, 0)
		for k, g := range cs.groups {
			if cs.tumbling {
				if now.Sub(g.start) > cs.span {
					keys = append(keys, k)
				}
			} else if now.Sub(g.last) > cs.span {
				delete(cs.groups, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			g := cs.groups[k]
			if h, ok := cs.evaluate(g, g.start.Add(cs.span)); ok {
				hits = append(hits, h)
			}
			delete(cs.groups, k)
		}
	}
	return hits
}

// Groups returns the number of live groups across all correlations.
func (co *Correlator) Groups() int {
	n := 0
	for _, cs := range co.corrs {
		n += len(cs.groups)
	}
	return n
}
