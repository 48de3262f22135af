package sigma

import (
	"net/netip"
	"strings"
)

// itemNode evaluates one compiled field item against the cached event fields.
type itemNode struct {
	m        *itemMatcher
	slot     int // -1 for keyword searches
	refSlots []int
}

func (n *itemNode) eval(c *evalCtx) bool {
	m := n.m
	var f *fieldVal
	if n.slot < 0 {
		f = c.keywords()
	} else {
		f = c.field(n.slot, m.field)
	}
	switch m.kind {
	case itemNull:
		return !f.ok || f.null
	case itemExists:
		return f.ok == m.exists
	}
	if !f.ok || f.null {
		return false
	}
	var hit bool
	switch m.kind {
	case itemPattern:
		vals := f.strs
		if !m.cased {
			vals = f.lowered()
		}
		hit = matchEach(len(m.pats), m.all && !m.neq, func(i int) bool {
			p := &m.pats[i]
			for _, v := range vals {
				if p.match(v) {
					return true
				}
			}
			if num := m.patNum[i]; num != nil {
				for _, v := range f.scal {
					if x, ok := toFloat(v); ok && x == *num {
						return true
					}
				}
			}
			return false
		})
	case itemRegex:
		hit = matchEach(len(m.res), m.all && !m.neq, func(i int) bool {
			for _, v := range f.strs {
				if m.res[i].MatchString(v) {
					return true
				}
			}
			return false
		})
	case itemCIDR:
		hit = matchEach(len(m.nets), m.all && !m.neq, func(i int) bool {
			for _, v := range f.strs {
				a, err := netip.ParseAddr(strings.TrimSpace(v))
				if err != nil {
					continue
				}
				if m.nets[i].Contains(a.Unmap()) || m.nets[i].Contains(a) {
					return true
				}
			}
			return false
		})
	case itemNumeric:
		hit = matchEach(len(m.nums), m.all && !m.neq, func(i int) bool {
			p := m.nums[i]
			for _, v := range f.scal {
				var x float64
				if m.timePart != "" {
					t, ok := timeOf(v)
					if !ok {
						continue
					}
					x = timePartOf(t, m.timePart)
				} else {
					var ok bool
					if x, ok = toFloat(v); !ok {
						continue
					}
				}
				if p.cmp(x) {
					return true
				}
			}
			return false
		})
	case itemFieldref:
		hit = matchEach(len(n.refSlots), m.all && !m.neq, func(i int) bool {
			rf := c.field(n.refSlots[i], m.refs[i])
			if !rf.ok || rf.null {
				return false
			}
			a, b := f.strs, rf.strs
			if !m.cased {
				a, b = f.lowered(), rf.lowered()
			}
			for _, x := range a {
				for _, y := range b {
					if x == y {
						return true
					}
				}
			}
			return false
		})
	}
	if m.neq {
		return !hit
	}
	return hit
}

// matchEach ORs (or ANDs when all) test over n alternatives.
func matchEach(n int, all bool, test func(int) bool) bool {
	for i := 0; i < n; i++ {
		ok := test(i)
		if all && !ok {
			return false
		}
		if !all && ok {
			return true
		}
	}
	return all && n > 0
}

func (p numPred) cmp(x float64) bool {
	switch p.op {
	case "lt":
		return x < p.val
	case "lte":
		return x <= p.val
	case "gt":
		return x > p.val
	case "gte":
		return x >= p.val
	}
	return x == p.val
}
