package sigma

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
)

// Event is what a rule is evaluated against: the mapping layer adapts Mamori's events to it.
type Event interface {
	// Field returns the value(s) of a Sigma field name and whether the field exists. Values are string, int64/uint64/float64, bool, nil, or []any of those.
	Field(name string) (any, bool)
	// Keywords returns the text keyword searches match against (e.g. the command line or the log line).
	Keywords() []string
}

// MapEvent is an Event backed by a map, for tests, hunts and simple adapters.
type MapEvent struct {
	Fields map[string]any
	Text   []string
}

// Field implements Event.
func (e MapEvent) Field(name string) (any, bool) {
	v, ok := e.Fields[name]
	return v, ok
}

// Keywords implements Event.
func (e MapEvent) Keywords() []string { return e.Text }

// ErrUnmappedField is returned (wrapped in an UnmappedFieldError) when a rule uses a field the mapping cannot provide.
var ErrUnmappedField = errors.New("unmapped field")

// UnmappedFieldError names the field a mapping cannot provide.
type UnmappedFieldError struct {
	Field     string
	LogSource LogSource
	// Reason says why the mapping cannot provide the field, for reports.
	Reason string
}

func (e *UnmappedFieldError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("unmapped field %q: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("unmapped field %q", e.Field)
}

// Is makes errors.Is(err, ErrUnmappedField) true.
func (e *UnmappedFieldError) Is(target error) bool { return target == ErrUnmappedField }

// CompileOptions configures Compile.
type CompileOptions struct {
	// FieldMap renames a rule's field for the rule's logsource; it returns an
	// error wrapping ErrUnmappedField when the mapping cannot provide it. Nil keeps names unchanged.
	FieldMap func(ls LogSource, field string) (string, error)
	// Keywords reports whether keyword searches can be served for a logsource; nil accepts all.
	Keywords func(ls LogSource) error
	// Placeholders resolves `expand` placeholders (%name% -> values).
	Placeholders map[string][]string
	// Filters are Sigma filter meta-rules; those naming the rule (by id or name) are AND-NOT-ed onto it.
	Filters []*Rule
}

// Matcher is a compiled detection rule; it is safe for concurrent use.
type Matcher struct {
	Rule  *Rule
	root  evalNode
	pool  sync.Pool
	slots int // number of distinct fields
	// Fields are the mapped field names the rule reads.
	Fields []string
}

// Compile builds a matcher for a detection rule.
func Compile(r *Rule, opts CompileOptions) (*Matcher, error) {
	if r == nil {
		return nil, errors.New("compile: nil rule")
	}
	if r.Correlation != nil || r.Filter != nil {
		return nil, fmt.Errorf("compile %q: correlation and filter rules are not single-event detections", r.Title)
	}
	c := &compiler{opts: &opts, ls: r.LogSource, slots: map[string]int{}}
	root, err := c.detection(&r.Detection)
	if err != nil {
		return nil, fmt.Errorf("compile %q: %w", r.Title, err)
	}
	for _, f := range opts.Filters {
		if f == nil || f.Filter == nil || !filterApplies(f, r) {
			continue
		}
		fn, err := c.detection(&f.Filter.Detection)
		if err != nil {
			return nil, fmt.Errorf("compile %q: filter %q: %w", r.Title, f.Title, err)
		}
		root = &andNode{kids: []evalNode{root, &notNode{kid: fn}}}
	}
	m := &Matcher{Rule: r, root: root, slots: len(c.slots), Fields: c.fieldNames}
	m.pool.New = func() any { return newEvalCtx(m.slots) }
	return m, nil
}

func filterApplies(f, r *Rule) bool {
	for _, ref := range f.Filter.Rules {
		if ref != "" && (ref == r.ID || ref == r.Name) {
			return true
		}
	}
	return false
}

// Match reports whether the event matches the rule.
func (m *Matcher) Match(ev Event) bool {
	ctx := m.pool.Get().(*evalCtx)
	ctx.reset(ev)
	ok := m.root.eval(ctx)
	ctx.ev = nil
	m.pool.Put(ctx)
	return ok
}

type compiler struct {
	opts       *CompileOptions
	ls         LogSource
	slots      map[string]int
	fieldNames []string
	kwChecked  bool
}

func (c *compiler) mapField(f string) (string, error) {
	if c.opts.FieldMap == nil {
		return f, nil
	}
	m, err := c.opts.FieldMap(c.ls, f)
	if err != nil {
		var u *UnmappedFieldError
		if errors.Is(err, ErrUnmappedField) && !errors.As(err, &u) {
			return "", &UnmappedFieldError{Field: f, LogSource: c.ls}
		}
		return "", err
	}
	return m, nil
}

func (c *compiler) slot(name string) int {
	if i, ok := c.slots[name]; ok {
		return i
	}
	i := len(c.slots)
	c.slots[name] = i
	c.fieldNames = append(c.fieldNames, name)
	return i
}

func (c *compiler) detection(d *Detection) (evalNode, error) {
	searches := map[string]evalNode{}
	for _, name := range d.SearchNames() {
		n, err := c.search(d.Searches[name])
		if err != nil {
			return nil, fmt.Errorf("search %q: %w", name, err)
		}
		searches[name] = n
	}
	var alts []evalNode
	for _, cs := range d.Conditions {
		cn, err := parseCondition(cs)
		if err != nil {
			return nil, err
		}
		n, err := c.cond(cn, d, searches)
		if err != nil {
			return nil, err
		}
		alts = append(alts, n)
	}
	if len(alts) == 0 {
		return nil, fmt.Errorf("%w: no condition", ErrCondition)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return &orNode{kids: alts}, nil
}

func (c *compiler) cond(n *condNode, d *Detection, searches map[string]evalNode) (evalNode, error) {
	switch n.op {
	case "id":
		s, ok := searches[n.name]
		if !ok {
			return nil, fmt.Errorf("%w: condition references undefined search identifier %q", ErrCondition, n.name)
		}
		return s, nil
	case "not":
		k, err := c.cond(n.kids[0], d, searches)
		if err != nil {
			return nil, err
		}
		return &notNode{kid: k}, nil
	case "and", "or":
		kids := make([]evalNode, 0, len(n.kids))
		for _, k := range n.kids {
			e, err := c.cond(k, d, searches)
			if err != nil {
				return nil, err
			}
			kids = append(kids, e)
		}
		if n.op == "and" {
			return &andNode{kids: kids}, nil
		}
		return &orNode{kids: kids}, nil
	case "of":
		var kids []evalNode
		for _, name := range d.SearchNames() {
			if n.name == "them" {
				if strings.HasPrefix(name, "_") {
					continue
				}
			} else if ok, _ := path.Match(globToPath(n.name), name); !ok {
				continue
			}
			kids = append(kids, searches[name])
		}
		if len(kids) == 0 {
			return nil, fmt.Errorf("%w: %q matches no search identifier", ErrCondition, n.name)
		}
		switch {
		case n.count == 0:
			return &andNode{kids: kids}, nil
		case n.count == 1:
			return &orNode{kids: kids}, nil
		case n.count > len(kids):
			return nil, fmt.Errorf("%w: %d of %q but only %d identifiers match", ErrCondition, n.count, n.name, len(kids))
		}
		return &atLeastNode{n: n.count, kids: kids}, nil
	}
	return nil, fmt.Errorf("%w: unknown node %q", ErrCondition, n.op)
}

// globToPath makes a condition pattern usable with path.Match (only * is a wildcard).
func globToPath(p string) string {
	var b strings.Builder
	for _, r := range p {
		switch r {
		case '*':
			b.WriteRune('*')
		case '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (c *compiler) search(s *Search) (evalNode, error) {
	var alts []evalNode
	for _, conj := range s.Any {
		var kids []evalNode
		for _, it := range conj {
			field := ""
			if it.Field != "" {
				f, err := c.mapField(it.Field)
				if err != nil {
					return nil, err
				}
				field = f
			} else if !c.kwChecked && c.opts.Keywords != nil {
				if err := c.opts.Keywords(c.ls); err != nil {
					return nil, fmt.Errorf("keyword search: %w", err)
				}
				c.kwChecked = true
			}
			im, err := compileItem(it, field, c.opts, c.mapField)
			if err != nil {
				return nil, err
			}
			node := &itemNode{m: im, slot: -1}
			if field != "" {
				node.slot = c.slot(field)
			}
			for _, r := range im.refs {
				node.refSlots = append(node.refSlots, c.slot(r))
			}
			kids = append(kids, node)
		}
		if len(kids) == 1 {
			alts = append(alts, kids[0])
		} else {
			alts = append(alts, &andNode{kids: kids})
		}
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return &orNode{kids: alts}, nil
}

// evalNode is a compiled condition or search node.
type evalNode interface{ eval(*evalCtx) bool }

type andNode struct{ kids []evalNode }
type orNode struct{ kids []evalNode }
type notNode struct{ kid evalNode }
type atLeastNode struct {
	n    int
	kids []evalNode
}

func (n *andNode) eval(c *evalCtx) bool {
	for _, k := range n.kids {
		if !k.eval(c) {
			return false
		}
	}
	return true
}

func (n *orNode) eval(c *evalCtx) bool {
	for _, k := range n.kids {
		if k.eval(c) {
			return true
		}
	}
	return false
}

func (n *notNode) eval(c *evalCtx) bool { return !n.kid.eval(c) }

func (n *atLeastNode) eval(c *evalCtx) bool {
	hits := 0
	for _, k := range n.kids {
		if k.eval(c) {
			hits++
			if hits >= n.n {
				return true
			}
		}
	}
	return false
}

// fieldVal is an event field fetched once per evaluation.
type fieldVal struct {
	loaded bool
	ok     bool
	raw    any
	scal   []any    // scalar elements (non-nil)
	strs   []string // string form of each scalar
	lows   []string // lowered, filled lazily
	lowOK  bool
	null   bool // value is nil or all elements nil
}

// evalCtx caches field lookups for one event.
type evalCtx struct {
	ev     Event
	fields []fieldVal
	kw     fieldVal
	// remap translates a matcher's slots to a Set's shared slots (nil: identity).
	remap []int
}

func newEvalCtx(n int) *evalCtx { return &evalCtx{fields: make([]fieldVal, n)} }

func (c *evalCtx) reset(ev Event) {
	c.ev = ev
	for i := range c.fields {
		f := &c.fields[i]
		f.loaded, f.lowOK, f.raw = false, false, nil
	}
	c.kw.loaded, c.kw.lowOK = false, false
}

func (c *evalCtx) field(slot int, name string) *fieldVal {
	if c.remap != nil {
		slot = c.remap[slot]
	}
	f := &c.fields[slot]
	if f.loaded {
		return f
	}
	f.loaded = true
	f.raw, f.ok = c.ev.Field(name)
	f.scal, f.strs = f.scal[:0], f.strs[:0]
	f.null = true
	if !f.ok {
		return f
	}
	add := func(v any) {
		if v == nil {
			return
		}
		f.null = false
		f.scal = append(f.scal, v)
		f.strs = append(f.strs, toString(v))
	}
	if list, isList := f.raw.([]any); isList {
		for _, v := range list {
			add(v)
		}
	} else if list, isList := f.raw.([]string); isList {
		for _, v := range list {
			add(v)
		}
	} else {
		add(f.raw)
	}
	return f
}

func (c *evalCtx) keywords() *fieldVal {
	f := &c.kw
	if f.loaded {
		return f
	}
	f.loaded, f.ok, f.null = true, true, false
	f.strs = append(f.strs[:0], c.ev.Keywords()...)
	return f
}

func (f *fieldVal) lowered() []string {
	if !f.lowOK {
		f.lows = f.lows[:0]
		for _, s := range f.strs {
			f.lows = append(f.lows, strings.ToLower(s))
		}
		f.lowOK = true
	}
	return f.lows
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case []byte:
		return string(x)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	case float64:
		return x, true
	case string:
		s := strings.TrimSpace(x)
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f, true
		}
		if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
			if u, err := strconv.ParseUint(s[2:], 16, 64); err == nil {
				return float64(u), true
			}
		}
	}
	return 0, false
}
