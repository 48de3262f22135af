package sigma

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrCondition is matched by every condition syntax error.
var ErrCondition = errors.New("invalid condition")

// condNode is a parsed condition expression.
type condNode struct {
	op    string // "and", "or", "not", "id", "of"
	kids  []*condNode
	name  string // identifier or pattern ("them" for all identifiers)
	count int    // for "of": 0 means all
}

func (n *condNode) String() string {
	switch n.op {
	case "id":
		return n.name
	case "not":
		return "not " + n.kids[0].String()
	case "of":
		q := "all"
		if n.count > 0 {
			q = strconv.Itoa(n.count)
		}
		return q + " of " + n.name
	}
	parts := make([]string, len(n.kids))
	for i, k := range n.kids {
		parts[i] = k.String()
	}
	return "(" + strings.Join(parts, " "+n.op+" ") + ")"
}

type condParser struct {
	toks []string
	pos  int
}

func condErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCondition, fmt.Sprintf(format, args...))
}

func tokenizeCondition(s string) ([]string, error) {
	var toks []string
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			toks = append(toks, string(c))
			i++
		case c == '|':
			return nil, condErr("aggregation expressions (`| count() ...`) are deprecated; use a correlation rule")
		case isIdentChar(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		default:
			return nil, condErr("unexpected character %q at offset %d", c, i)
		}
	}
	return toks, nil
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '*' || c == '-' || c == '.' || c == '?' ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80
}

// parseCondition parses a condition with precedence or < and < not < x-of < ().
func parseCondition(s string) (*condNode, error) {
	if len(s) > 64<<10 {
		return nil, condErr("condition longer than 64 KiB")
	}
	toks, err := tokenizeCondition(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, condErr("empty condition")
	}
	p := &condParser{toks: toks}
	n, err := p.parseOr(0)
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, condErr("unexpected %q", p.toks[p.pos])
	}
	return n, nil
}

const maxCondDepth = 200

func (p *condParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *condParser) parseOr(depth int) (*condNode, error) {
	if depth > maxCondDepth {
		return nil, condErr("nesting deeper than %d", maxCondDepth)
	}
	l, err := p.parseAnd(depth)
	if err != nil {
		return nil, err
	}
	kids := []*condNode{l}
	for strings.EqualFold(p.peek(), "or") {
		p.pos++
		r, err := p.parseAnd(depth)
		if err != nil {
			return nil, err
		}
		kids = append(kids, r)
	}
	if len(kids) == 1 {
		return l, nil
	}
	return &condNode{op: "or", kids: kids}, nil
}

func (p *condParser) parseAnd(depth int) (*condNode, error) {
	l, err := p.parseNot(depth)
	if err != nil {
		return nil, err
	}
	kids := []*condNode{l}
	for strings.EqualFold(p.peek(), "and") {
		p.pos++
		r, err := p.parseNot(depth)
		if err != nil {
			return nil, err
		}
		kids = append(kids, r)
	}
	if len(kids) == 1 {
		return l, nil
	}
	return &condNode{op: "and", kids: kids}, nil
}

func (p *condParser) parseNot(depth int) (*condNode, error) {
	if strings.EqualFold(p.peek(), "not") {
		p.pos++
		if depth > maxCondDepth {
			return nil, condErr("nesting deeper than %d", maxCondDepth)
		}
		k, err := p.parseNot(depth + 1)
		if err != nil {
			return nil, err
		}
		return &condNode{op: "not", kids: []*condNode{k}}, nil
	}
	return p.parsePrimary(depth)
}

func isKeyword(t string) bool {
	switch strings.ToLower(t) {
	case "and", "or", "not", "of", "(", ")":
		return true
	}
	return false
}

func (p *condParser) parsePrimary(depth int) (*condNode, error) {
	t := p.peek()
	switch {
	case t == "":
		return nil, condErr("unexpected end of condition")
	case t == "(":
		p.pos++
		n, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, condErr("missing closing parenthesis")
		}
		p.pos++
		return n, nil
	case t == ")":
		return nil, condErr("unexpected )")
	case isKeyword(t):
		return nil, condErr("unexpected %q", t)
	}
	p.pos++
	if p.pos < len(p.toks) && strings.EqualFold(p.toks[p.pos], "of") {
		count := 0
		if !strings.EqualFold(t, "all") {
			n, err := strconv.Atoi(t)
			if err != nil || n < 1 {
				return nil, condErr("quantifier before \"of\" must be a positive number or all, got %q", t)
			}
			count = n
		}
		p.pos++
		target := p.peek()
		if target == "" || isKeyword(target) {
			return nil, condErr("\"of\" needs a search identifier pattern or them")
		}
		p.pos++
		if strings.EqualFold(target, "them") {
			target = "them"
		}
		return &condNode{op: "of", count: count, name: target}, nil
	}
	if strings.ContainsAny(t, "*?") {
		return nil, condErr("wildcard identifier %q is only allowed after \"1 of\" or \"all of\"", t)
	}
	return &condNode{op: "id", name: t}, nil
}
