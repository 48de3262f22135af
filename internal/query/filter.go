// Package query parses the short field conditions analysts type on the CLI
// and send to the API (`process.args~curl`, `process.uid=0`) into
// store.Conditions.
//
// The trap: values are data, never syntax. The parser only splits on the
// first operator; everything after it, quotes and wildcards included, is the
// literal value the store matches.
package query

import (
	"fmt"
	"sort"
	"strings"

	"github.com/mamori-edr/mamori/internal/store"
)

// operators in the order they must be tried (longest first).
var operators = []struct {
	tok string
	op  store.Op
}{
	{"!=", store.OpNe},
	{"^=", store.OpPrefix},
	{"$=", store.OpSuffix},
	{"~", store.OpContains},
	{"=", store.OpEq},
	{">", store.OpGt},
	{"<", store.OpLt},
}

// Syntax describes the condition syntax for help texts.
const Syntax = "FIELD=VALUE (equals), FIELD!=VALUE, FIELD~VALUE (contains), FIELD^=VALUE (starts with), FIELD$=VALUE (ends with), FIELD>N, FIELD<N"

// MaxValueLen bounds a condition's value.
const MaxValueLen = 4096

// ParseCondition parses one condition such as "process.args~curl".
func ParseCondition(s string) (store.Condition, error) {
	best, bestTok := -1, ""
	var bestOp store.Op
	for _, o := range operators {
		i := strings.Index(s, o.tok)
		if i <= 0 {
			continue
		}
		// The field name never contains operator characters, so the
		// earliest operator wins; on a tie the longer token wins.
		if best == -1 || i < best || (i == best && len(o.tok) > len(bestTok)) {
			best, bestTok, bestOp = i, o.tok, o.op
		}
	}
	if best == -1 {
		return store.Condition{}, fmt.Errorf("condition %q: %w: want %s", s, store.ErrBadQuery, Syntax)
	}
	field := strings.TrimSpace(s[:best])
	value := s[best+len(bestTok):]
	kind, ok := store.QueryFields[field]
	if !ok {
		return store.Condition{}, fmt.Errorf("condition %q: %w: unknown field %q (known: %s)", s, store.ErrBadQuery, field, strings.Join(FieldNames(), ", "))
	}
	if len(value) > MaxValueLen {
		return store.Condition{}, fmt.Errorf("condition on %s: %w: value longer than %d bytes", field, store.ErrBadQuery, MaxValueLen)
	}
	if kind == "int" {
		switch bestOp {
		case store.OpContains, store.OpPrefix, store.OpSuffix:
			return store.Condition{}, fmt.Errorf("condition %q: %w: %s is a number; use =, !=, > or <", s, store.ErrBadQuery, field)
		}
		if !isInt(value) {
			return store.Condition{}, fmt.Errorf("condition %q: %w: %s needs a whole number, got %q", s, store.ErrBadQuery, field, value)
		}
	}
	return store.Condition{Field: field, Op: bestOp, Value: value}, nil
}

// ParseConditions parses each string with ParseCondition.
func ParseConditions(ss []string) ([]store.Condition, error) {
	out := make([]store.Condition, 0, len(ss))
	for _, s := range ss {
		c, err := ParseCondition(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// FormatCondition is the inverse of ParseCondition.
func FormatCondition(c store.Condition) string {
	for _, o := range operators {
		if o.op == c.Op {
			return c.Field + o.tok + c.Value
		}
	}
	return c.Field + "?" + c.Value
}

// FieldNames lists the queryable fields, sorted.
func FieldNames() []string {
	names := make([]string, 0, len(store.QueryFields))
	for k := range store.QueryFields {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func isInt(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" || len(s) > 19 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
