package sigma

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Rule is one Sigma document: a detection rule, a filter meta-rule (Filter
// set) or a correlation rule (Correlation set).
type Rule struct {
	Title          string
	ID             string
	Name           string
	Related        []Related
	Taxonomy       string
	Status         string
	Description    string
	License        string
	References     []string
	Author         string
	Date           string
	Modified       string
	LogSource      LogSource
	Detection      Detection
	Fields         []string
	FalsePositives []string
	Level          string
	Tags           []string
	Scope          []string
	Filter         *Filter
	Correlation    *Correlation
	// Custom holds every top-level key the specification does not define.
	Custom map[string]any
	// Source is the file the rule came from ("" when parsed from bytes).
	Source string
	// Line is the line of the document start in Source.
	Line int
}

// Related links a rule to another rule by id.
type Related struct {
	ID   string
	Type string
}

// LogSource selects the events a rule applies to.
type LogSource struct {
	Category   string
	Product    string
	Service    string
	Definition string
	// Custom holds logsource keys beyond the four standard ones.
	Custom map[string]string
}

// Detection holds the search identifiers and the condition of a rule.
type Detection struct {
	// Searches maps each search identifier to its definition.
	Searches map[string]*Search
	// Conditions are OR-ed together when the condition is a list.
	Conditions []string
	// ConditionLine is the line of the condition key.
	ConditionLine int
	// Timeframe is the deprecated timeframe attribute, kept for reporting.
	Timeframe string
}

// Search is one search identifier: an OR of AND-ed field items.
type Search struct {
	Name string
	Line int
	// Any holds the alternatives (list of maps); each alternative is an AND of items.
	Any [][]*FieldItem
}

// FieldItem is one `field|mod|mod: values` entry; Field is "" for keyword searches.
type FieldItem struct {
	Field     string
	Modifiers []string
	Values    []Value
	Line      int
}

// ValueKind is the YAML type of a rule value.
type ValueKind int

// Value kinds.
const (
	KindString ValueKind = iota
	KindInt
	KindFloat
	KindBool
	KindNull
)

// Value is one scalar value of a field item, kept as written.
type Value struct {
	Kind ValueKind
	Raw  string
	Line int
}

// Filter is the body of a Sigma filter meta-rule.
type Filter struct {
	Rules     []string
	Detection Detection
}

// CorrelationType names a correlation rule's aggregation.
type CorrelationType string

// Correlation types from the correlation rules specification.
const (
	EventCount      CorrelationType = "event_count"
	ValueCount      CorrelationType = "value_count"
	Temporal        CorrelationType = "temporal"
	TemporalOrdered CorrelationType = "temporal_ordered"
	ValueSum        CorrelationType = "value_sum"
	ValueAvg        CorrelationType = "value_avg"
	ValuePercentile CorrelationType = "value_percentile"
)

// Correlation is the correlation section of a correlation rule.
type Correlation struct {
	Type     CorrelationType
	Rules    []string
	GroupBy  []string
	Timespan string
	// Span is Timespan parsed, in seconds.
	SpanSeconds int64
	Condition   CorrCondition
	// Aliases maps alias -> rule name -> field name.
	Aliases  map[string]map[string]string
	Generate bool
}

// CorrCondition is the threshold of a correlation: all set bounds must hold.
type CorrCondition struct {
	Field string
	// Ops maps gt/gte/lt/lte/eq/neq to its threshold.
	Ops map[string]float64
}

// ParseError is a rule problem with its position.
type ParseError struct {
	File string
	Line int
	Msg  string
	Err  error
}

func (e *ParseError) Error() string {
	loc := e.File
	if loc == "" {
		loc = "rule"
	}
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, e.Line)
	}
	return loc + ": " + e.Msg
}

func (e *ParseError) Unwrap() error { return e.Err }

// ErrInvalidRule is matched by every ParseError through errors.Is.
var ErrInvalidRule = errors.New("invalid sigma rule")

func (e *ParseError) Is(target error) bool { return target == ErrInvalidRule }

func perr(n *yaml.Node, format string, args ...any) *ParseError {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ParseError{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// ParseRule parses a single-document Sigma rule.
func ParseRule(data []byte) (*Rule, error) {
	rules, err := ParseRules(data)
	if err != nil {
		return nil, err
	}
	if len(rules) != 1 {
		return nil, &ParseError{Msg: fmt.Sprintf("expected one rule, found %d documents", len(rules))}
	}
	return rules[0], nil
}

// ParseRules parses every document of a (possibly multi-document) Sigma file,
// applying the legacy `action: global/reset/repeat` collection semantics.
func ParseRules(data []byte) ([]*Rule, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*Rule
	var global *yaml.Node
	var prev *yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &ParseError{Line: yamlErrLine(err), Msg: "yaml: " + strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		if root.Kind != yaml.MappingNode {
			return nil, perr(root, "rule document must be a mapping, got %s", kindName(root))
		}
		action := ""
		if a := mapGet(root, "action"); a != nil {
			action = a.Value
			root = mapWithout(root, "action")
		}
		switch action {
		case "global":
			global = root
			continue
		case "reset":
			global = nil
			continue
		case "repeat":
			if prev == nil {
				return nil, perr(root, "action: repeat without a previous document")
			}
			root = mergeMaps(prev, root)
		case "":
		default:
			return nil, perr(mapGet(root, "title"), "unknown action %q (want global, reset or repeat)", action)
		}
		prev = root
		full := root
		if global != nil {
			full = mergeMaps(global, root)
		}
		r, err := decodeRule(full)
		if err != nil {
			return nil, err
		}
		r.Line = root.Line
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, &ParseError{Msg: "no rule document"}
	}
	return out, nil
}

func yamlErrLine(err error) int {
	var line int
	msg := err.Error()
	if i := strings.Index(msg, "line "); i >= 0 {
		fmt.Sscanf(msg[i+5:], "%d", &line)
	}
	return line
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapWithout(m *yaml.Node, key string) *yaml.Node {
	c := *m
	c.Content = nil
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			c.Content = append(c.Content, m.Content[i], m.Content[i+1])
		}
	}
	return &c
}

// mergeMaps deep-merges over into base (over wins), as rule collections do.
func mergeMaps(base, over *yaml.Node) *yaml.Node {
	c := *base
	c.Content = append([]*yaml.Node(nil), base.Content...)
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		found := false
		for j := 0; j+1 < len(c.Content); j += 2 {
			if c.Content[j].Value == k.Value {
				if v.Kind == yaml.MappingNode && c.Content[j+1].Kind == yaml.MappingNode {
					c.Content[j+1] = mergeMaps(c.Content[j+1], v)
				} else {
					c.Content[j+1] = v
				}
				found = true
				break
			}
		}
		if !found {
			c.Content = append(c.Content, k, v)
		}
	}
	return &c
}

func scalar(n *yaml.Node, key string) (string, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode {
		return "", perr(n, "%s must be a scalar, got %s", key, kindName(n))
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func stringList(n *yaml.Node, key string) ([]string, error) {
	if n.Kind == yaml.ScalarNode {
		if n.Tag == "!!null" {
			return nil, nil
		}
		return []string{n.Value}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, perr(n, "%s must be a list of strings, got %s", key, kindName(n))
	}
	out := make([]string, 0, len(n.Content))
	for _, c := range n.Content {
		s, err := scalar(c, key+" item")
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func decodeRule(root *yaml.Node) (*Rule, error) {
	r := &Rule{}
	var detNode *yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, perr(k, "rule keys must be scalars")
		}
		if seen[k.Value] {
			return nil, perr(k, "duplicate key %q", k.Value)
		}
		seen[k.Value] = true
		var err error
		switch k.Value {
		case "title":
			r.Title, err = scalar(v, "title")
		case "id":
			r.ID, err = scalar(v, "id")
		case "name":
			r.Name, err = scalar(v, "name")
		case "taxonomy":
			r.Taxonomy, err = scalar(v, "taxonomy")
		case "status":
			r.Status, err = scalar(v, "status")
		case "description":
			r.Description, err = scalar(v, "description")
		case "license":
			r.License, err = scalar(v, "license")
		case "author":
			r.Author, err = scalar(v, "author")
		case "date":
			r.Date, err = scalar(v, "date")
		case "modified":
			r.Modified, err = scalar(v, "modified")
		case "level":
			r.Level, err = scalar(v, "level")
		case "references":
			r.References, err = stringList(v, "references")
		case "fields":
			r.Fields, err = stringList(v, "fields")
		case "falsepositives":
			r.FalsePositives, err = stringList(v, "falsepositives")
		case "tags":
			r.Tags, err = stringList(v, "tags")
		case "scope":
			r.Scope, err = stringList(v, "scope")
		case "related":
			r.Related, err = decodeRelated(v)
		case "logsource":
			r.LogSource, err = decodeLogSource(v)
		case "detection":
			detNode = v
		case "filter":
			r.Filter, err = decodeFilter(v)
		case "correlation":
			r.Correlation, err = decodeCorrelation(v)
		default:
			var x any
			if err := v.Decode(&x); err != nil {
				return nil, perr(v, "custom field %q: %v", k.Value, err)
			}
			if r.Custom == nil {
				r.Custom = map[string]any{}
			}
			r.Custom[k.Value] = x
		}
		if err != nil {
			return nil, err
		}
	}
	if r.Title == "" {
		return nil, perr(root, "missing required field title")
	}
	switch {
	case r.Correlation != nil:
		if detNode != nil {
			return nil, perr(detNode, "a correlation rule cannot also have a detection")
		}
	case r.Filter != nil:
		if detNode != nil {
			return nil, perr(detNode, "a filter rule cannot also have a detection")
		}
		if !seen["logsource"] {
			return nil, perr(root, "filter rule is missing logsource")
		}
	default:
		if detNode == nil {
			return nil, perr(root, "missing required field detection")
		}
		if !seen["logsource"] {
			return nil, perr(root, "missing required field logsource")
		}
		d, err := decodeDetection(detNode, true)
		if err != nil {
			return nil, err
		}
		r.Detection = d
	}
	return r, nil
}

func decodeRelated(n *yaml.Node) ([]Related, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, perr(n, "related must be a list, got %s", kindName(n))
	}
	var out []Related
	for _, c := range n.Content {
		if c.Kind != yaml.MappingNode {
			return nil, perr(c, "related item must be a mapping with id and type")
		}
		var rel Related
		for i := 0; i+1 < len(c.Content); i += 2 {
			s, err := scalar(c.Content[i+1], "related "+c.Content[i].Value)
			if err != nil {
				return nil, err
			}
			switch c.Content[i].Value {
			case "id":
				rel.ID = s
			case "type":
				rel.Type = s
			}
		}
		if rel.ID == "" || rel.Type == "" {
			return nil, perr(c, "related item needs both id and type")
		}
		out = append(out, rel)
	}
	return out, nil
}

func decodeLogSource(n *yaml.Node) (LogSource, error) {
	var ls LogSource
	if n.Kind != yaml.MappingNode {
		return ls, perr(n, "logsource must be a mapping, got %s", kindName(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		s, err := scalar(n.Content[i+1], "logsource "+key)
		if err != nil {
			return ls, err
		}
		switch key {
		case "category":
			ls.Category = s
		case "product":
			ls.Product = s
		case "service":
			ls.Service = s
		case "definition":
			ls.Definition = s
		default:
			if ls.Custom == nil {
				ls.Custom = map[string]string{}
			}
			ls.Custom[key] = s
		}
	}
	return ls, nil
}

func decodeFilter(n *yaml.Node) (*Filter, error) {
	if n.Kind != yaml.MappingNode {
		return nil, perr(n, "filter must be a mapping, got %s", kindName(n))
	}
	rn := mapGet(n, "rules")
	if rn == nil {
		return nil, perr(n, "filter is missing rules")
	}
	rules, err := stringList(rn, "filter rules")
	if err != nil {
		return nil, err
	}
	d, err := decodeDetection(mapWithout(n, "rules"), true)
	if err != nil {
		return nil, err
	}
	return &Filter{Rules: rules, Detection: d}, nil
}

func decodeDetection(n *yaml.Node, needCond bool) (Detection, error) {
	d := Detection{Searches: map[string]*Search{}}
	if n.Kind != yaml.MappingNode {
		return d, perr(n, "detection must be a mapping, got %s", kindName(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "condition":
			d.ConditionLine = k.Line
			conds, err := stringList(v, "condition")
			if err != nil {
				return d, err
			}
			for _, c := range conds {
				if strings.TrimSpace(c) == "" {
					return d, perr(v, "condition is empty")
				}
			}
			d.Conditions = conds
		case "timeframe":
			s, err := scalar(v, "timeframe")
			if err != nil {
				return d, err
			}
			d.Timeframe = s
		default:
			if _, dup := d.Searches[k.Value]; dup {
				return d, perr(k, "duplicate search identifier %q", k.Value)
			}
			s, err := decodeSearch(k.Value, v)
			if err != nil {
				return d, err
			}
			d.Searches[k.Value] = s
		}
	}
	if needCond && len(d.Conditions) == 0 {
		return d, perr(n, "detection is missing condition")
	}
	// Parse each condition now so syntax errors surface at load time.
	for _, c := range d.Conditions {
		if _, err := parseCondition(c); err != nil {
			return d, &ParseError{Line: d.ConditionLine, Msg: "condition: " + err.Error(), Err: err}
		}
	}
	return d, nil
}

func decodeSearch(name string, n *yaml.Node) (*Search, error) {
	s := &Search{Name: name, Line: n.Line}
	switch n.Kind {
	case yaml.MappingNode:
		items, err := decodeItems(n)
		if err != nil {
			return nil, err
		}
		s.Any = [][]*FieldItem{items}
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return nil, perr(n, "search %q is an empty list", name)
		}
		var kw *FieldItem
		for _, c := range n.Content {
			switch c.Kind {
			case yaml.MappingNode:
				items, err := decodeItems(c)
				if err != nil {
					return nil, err
				}
				s.Any = append(s.Any, items)
			case yaml.ScalarNode:
				v, err := decodeValue(c)
				if err != nil {
					return nil, err
				}
				if kw == nil {
					kw = &FieldItem{Line: c.Line}
					s.Any = append(s.Any, []*FieldItem{kw})
				}
				kw.Values = append(kw.Values, v)
			default:
				return nil, perr(c, "search %q: list items must be maps or values, got %s", name, kindName(c))
			}
		}
	case yaml.ScalarNode:
		v, err := decodeValue(n)
		if err != nil {
			return nil, err
		}
		s.Any = [][]*FieldItem{{{Line: n.Line, Values: []Value{v}}}}
	default:
		return nil, perr(n, "search %q must be a map or a list, got %s", name, kindName(n))
	}
	return s, nil
}

func decodeItems(n *yaml.Node) ([]*FieldItem, error) {
	if len(n.Content) == 0 {
		return nil, perr(n, "empty selection map")
	}
	var items []*FieldItem
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, perr(k, "field name must be a scalar")
		}
		parts := strings.Split(k.Value, "|")
		it := &FieldItem{Field: parts[0], Line: k.Line}
		for _, m := range parts[1:] {
			if m == "" {
				return nil, perr(k, "empty modifier in %q", k.Value)
			}
			it.Modifiers = append(it.Modifiers, m)
		}
		switch v.Kind {
		case yaml.ScalarNode:
			val, err := decodeValue(v)
			if err != nil {
				return nil, err
			}
			it.Values = []Value{val}
		case yaml.SequenceNode:
			if len(v.Content) == 0 {
				return nil, perr(v, "field %q has an empty value list", k.Value)
			}
			for _, c := range v.Content {
				if c.Kind != yaml.ScalarNode {
					return nil, perr(c, "field %q: list values must be scalars, got %s", k.Value, kindName(c))
				}
				val, err := decodeValue(c)
				if err != nil {
					return nil, err
				}
				if val.Kind == KindNull && len(v.Content) > 1 {
					return nil, perr(c, "field %q: null cannot be part of a value list (use its own selection)", k.Value)
				}
				it.Values = append(it.Values, val)
			}
		default:
			return nil, perr(v, "field %q: value must be a scalar or a list, got %s", k.Value, kindName(v))
		}
		items = append(items, it)
	}
	return items, nil
}

func decodeValue(n *yaml.Node) (Value, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	v := Value{Raw: n.Value, Line: n.Line}
	switch n.ShortTag() {
	case "!!str":
		v.Kind = KindString
	case "!!int":
		v.Kind = KindInt
	case "!!float":
		v.Kind = KindFloat
	case "!!bool":
		v.Kind = KindBool
	case "!!null":
		v.Kind = KindNull
		v.Raw = ""
	case "!!timestamp":
		v.Kind = KindString
	default:
		return v, perr(n, "unsupported value type %s", n.ShortTag())
	}
	return v, nil
}

var corrOps = map[string]bool{"gt": true, "gte": true, "lt": true, "lte": true, "eq": true, "neq": true}

func decodeCorrelation(n *yaml.Node) (*Correlation, error) {
	if n.Kind != yaml.MappingNode {
		return nil, perr(n, "correlation must be a mapping, got %s", kindName(n))
	}
	c := &Correlation{}
	var condNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "type":
			var s string
			s, err = scalar(v, "correlation type")
			c.Type = CorrelationType(s)
			switch c.Type {
			case EventCount, ValueCount, Temporal, TemporalOrdered, ValueSum, ValueAvg, ValuePercentile:
			default:
				return nil, perr(v, "unknown correlation type %q", s)
			}
		case "rules":
			c.Rules, err = stringList(v, "correlation rules")
		case "group-by":
			c.GroupBy, err = stringList(v, "group-by")
		case "timespan", "timeframe":
			c.Timespan, err = scalar(v, "timespan")
			if err == nil {
				c.SpanSeconds, err = parseTimespan(c.Timespan)
				if err != nil {
					return nil, perr(v, "timespan: %v", err)
				}
			}
		case "generate":
			var s string
			s, err = scalar(v, "generate")
			c.Generate = s == "true"
		case "condition":
			condNode = v
		case "aliases":
			c.Aliases, err = decodeAliases(v)
		default:
			return nil, perr(k, "unknown correlation key %q", k.Value)
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Type == "" {
		return nil, perr(n, "correlation is missing type")
	}
	if len(c.Rules) == 0 {
		return nil, perr(n, "correlation is missing rules")
	}
	if c.Timespan == "" {
		return nil, perr(n, "correlation is missing timespan")
	}
	if condNode != nil {
		if condNode.Kind != yaml.MappingNode {
			return nil, perr(condNode, "correlation condition must be a mapping like {gte: 10}")
		}
		c.Condition.Ops = map[string]float64{}
		for i := 0; i+1 < len(condNode.Content); i += 2 {
			k, v := condNode.Content[i], condNode.Content[i+1]
			if k.Value == "field" {
				fields, err := stringList(v, "condition field")
				if err != nil {
					return nil, err
				}
				c.Condition.Field = strings.Join(fields, ",")
				continue
			}
			if !corrOps[k.Value] {
				return nil, perr(k, "unknown correlation condition operator %q (want gt, gte, lt, lte, eq or neq)", k.Value)
			}
			var f float64
			if _, err := fmt.Sscanf(v.Value, "%g", &f); err != nil || v.Kind != yaml.ScalarNode {
				return nil, perr(v, "correlation condition %s needs a number, got %q", k.Value, v.Value)
			}
			c.Condition.Ops[k.Value] = f
		}
		if len(c.Condition.Ops) == 0 {
			return nil, perr(condNode, "correlation condition has no operator")
		}
	}
	switch c.Type {
	case EventCount, ValueCount, ValueSum, ValueAvg, ValuePercentile:
		if condNode == nil {
			return nil, perr(n, "%s correlation is missing condition", c.Type)
		}
	}
	switch c.Type {
	case ValueCount, ValueSum, ValueAvg, ValuePercentile:
		if c.Condition.Field == "" {
			return nil, perr(condNode, "%s correlation condition is missing field", c.Type)
		}
	}
	return c, nil
}

func decodeAliases(n *yaml.Node) (map[string]map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, perr(n, "aliases must be a mapping")
	}
	out := map[string]map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.MappingNode {
			return nil, perr(v, "alias %q must map rule names to fields", k.Value)
		}
		m := map[string]string{}
		for j := 0; j+1 < len(v.Content); j += 2 {
			s, err := scalar(v.Content[j+1], "alias field")
			if err != nil {
				return nil, err
			}
			m[v.Content[j].Value] = s
		}
		out[k.Value] = m
	}
	return out, nil
}

func parseTimespan(s string) (int64, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("%q is not number+unit (s, m, h, d)", s)
	}
	var n int64
	for _, c := range s[:len(s)-1] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not number+unit (s, m, h, d)", s)
		}
		n = n*10 + int64(c-'0')
		if n > 1<<40 {
			return 0, fmt.Errorf("%q is too long", s)
		}
	}
	mult := map[byte]int64{'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}[s[len(s)-1]]
	if mult == 0 || n == 0 {
		return 0, fmt.Errorf("%q is not a positive number+unit (s, m, h, d)", s)
	}
	return n * mult, nil
}

// SearchNames returns the detection's search identifiers, sorted.
func (d *Detection) SearchNames() []string {
	out := make([]string, 0, len(d.Searches))
	for k := range d.Searches {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
