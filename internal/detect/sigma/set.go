package sigma

import "sync"

// Set evaluates many matchers against one event while fetching and
// lower-casing each field only once; build one Set per logsource so an event
// is only offered to the rules that can apply to it. It is safe for concurrent use.
type Set struct {
	ms     []*Matcher
	remaps [][]int
	slots  int
	pool   sync.Pool
}

// NewSet groups matchers for shared evaluation.
func NewSet(ms []*Matcher) *Set {
	s := &Set{ms: ms}
	global := map[string]int{}
	for _, m := range ms {
		remap := make([]int, len(m.Fields))
		for i, f := range m.Fields {
			g, ok := global[f]
			if !ok {
				g = len(global)
				global[f] = g
			}
			remap[i] = g
		}
		s.remaps = append(s.remaps, remap)
	}
	s.slots = len(global)
	s.pool.New = func() any { return newEvalCtx(s.slots) }
	return s
}

// Len returns the number of matchers in the set.
func (s *Set) Len() int { return len(s.ms) }

// Match appends to dst every matcher whose rule matches ev and returns it.
func (s *Set) Match(ev Event, dst []*Matcher) []*Matcher {
	ctx := s.pool.Get().(*evalCtx)
	ctx.reset(ev)
	for i, m := range s.ms {
		ctx.remap = s.remaps[i]
		if m.root.eval(ctx) {
			dst = append(dst, m)
		}
	}
	ctx.remap, ctx.ev = nil, nil
	s.pool.Put(ctx)
	return dst
}
