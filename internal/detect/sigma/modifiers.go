package sigma

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// ErrUnknownModifier reports a modifier that is not in the modifiers appendix.
var ErrUnknownModifier = errors.New("unknown modifier")

// ErrModifier reports a modifier used on a value or in a chain it cannot apply to.
var ErrModifier = errors.New("invalid modifier use")

// ErrUnresolvedPlaceholder reports an `expand` placeholder with no value in CompileOptions.Placeholders.
var ErrUnresolvedPlaceholder = errors.New("unresolved placeholder")

// maxExpansion bounds how many alternatives windash/expand/base64offset may create per value.
const maxExpansion = 4096

type itemKind uint8

const (
	itemPattern itemKind = iota // wildcard/literal string patterns
	itemRegex
	itemCIDR
	itemNumeric
	itemNull
	itemExists
	itemFieldref
)

// numPred is one numeric comparison.
type numPred struct {
	op  string // eq, lt, lte, gt, gte
	val float64
}

// itemMatcher is one compiled field item.
type itemMatcher struct {
	field string // mapped field name; "" = keywords
	kind  itemKind
	all   bool
	neq   bool
	cased bool
	pats  []pattern
	// patNum holds, per pattern, the number a YAML int/float value also
	// equals numerically (so 1.0 matches an event's 1), or nil.
	patNum   []*float64
	res      []*regexp.Regexp
	nets     []netip.Prefix
	nums     []numPred
	exists   bool
	refs     []string
	timePart string
}

func modErr(it *FieldItem, format string, args ...any) error {
	return fmt.Errorf("%w: field %q line %d: %s", ErrModifier, it.Field, it.Line, fmt.Sprintf(format, args...))
}

// compileItem turns a field item into a matcher, applying modifiers in order.
func compileItem(it *FieldItem, field string, opts *CompileOptions, mapField func(string) (string, error)) (*itemMatcher, error) {
	im := &itemMatcher{field: field}
	vals := make([]sstr, 0, len(it.Values))
	isNull := false
	for _, v := range it.Values {
		switch v.Kind {
		case KindNull:
			isNull = true
		case KindString:
			vals = append(vals, parseSigmaString(v.Raw))
		default:
			vals = append(vals, literal(v.Raw))
		}
	}
	var (
		re, cidr, exists, fieldref, patternMod bool
		reFlags                                string
		numOp                                  string
	)
	for idx, m := range it.Modifiers {
		switch m {
		case "contains", "startswith", "endswith":
			if re || cidr || exists || numOp != "" {
				return nil, modErr(it, "%s cannot follow re, cidr, exists or a numeric modifier", m)
			}
			patternMod = true
			for i, v := range vals {
				if m != "endswith" && !v.endsWithStar() {
					v = append(v[:len(v):len(v)], part{wc: '*'})
				}
				if m != "startswith" && !v.startsWithStar() {
					v = append(sstr{{wc: '*'}}, v...)
				}
				vals[i] = v
			}
		case "all":
			if len(it.Values) < 2 {
				return nil, modErr(it, "all needs a list of at least two values (use a separate selection to repeat a field)")
			}
			im.all = true
		case "cased":
			im.cased = true
		case "neq":
			// neq needs the field present: an absent field is not "different".
			im.neq = true
		case "windash":
			var out []sstr
			for _, v := range vals {
				w, err := windash(v)
				if err != nil {
					return nil, modErr(it, "%v", err)
				}
				out = append(out, w...)
			}
			vals = out
		case "base64", "base64offset":
			var out []sstr
			for _, v := range vals {
				if v.hasWildcard() {
					return nil, modErr(it, "%s cannot encode wildcards; put contains/startswith/endswith after it", m)
				}
				raw := v.plain()
				if m == "base64" {
					out = append(out, literal(base64.StdEncoding.EncodeToString([]byte(raw))))
				} else {
					for _, s := range base64Offsets(raw) {
						out = append(out, literal(s))
					}
				}
			}
			vals = out
		case "utf16le", "wide", "utf16be", "utf16":
			for i, v := range vals {
				enc := v.mapLiterals(func(s string) string { return encodeUTF16(s, m == "utf16be") })
				if m == "utf16" {
					enc = append(sstr{{lit: "\xff\xfe"}}, enc...)
				}
				vals[i] = enc
			}
		case "re":
			re = true
		case "i", "m", "s":
			if !re {
				return nil, modErr(it, "regex flag %q must follow re", m)
			}
			reFlags += m
		case "cidr":
			cidr = true
		case "lt", "lte", "gt", "gte":
			numOp = m
		case "exists":
			exists = true
		case "fieldref":
			fieldref = true
		case "expand":
			var out []sstr
			for _, v := range vals {
				alts := []sstr{nil}
				for _, p := range v {
					if p.wc != 0 {
						for i := range alts {
							alts[i] = append(alts[i], p)
						}
						continue
					}
					exp, err := expandPlaceholders(p.lit, opts.Placeholders)
					if err != nil {
						return nil, fmt.Errorf("field %q line %d: %w", it.Field, it.Line, err)
					}
					if len(alts)*len(exp) > maxExpansion {
						return nil, modErr(it, "expand creates more than %d values", maxExpansion)
					}
					var next []sstr
					for _, a := range alts {
						for _, e := range exp {
							// Placeholder values are Sigma strings: their wildcards count.
							next = append(next, append(a[:len(a):len(a)], parseSigmaString(e)...))
						}
					}
					alts = next
				}
				out = append(out, alts...)
			}
			if len(out) > maxExpansion {
				return nil, modErr(it, "expand creates more than %d values", maxExpansion)
			}
			vals = out
		case "minute", "hour", "day", "week", "month", "year":
			im.timePart = m
		default:
			_ = idx
			return nil, fmt.Errorf("%w %q on field %q line %d", ErrUnknownModifier, m, it.Field, it.Line)
		}
	}
	if len(vals) > maxExpansion {
		return nil, modErr(it, "modifiers create more than %d values", maxExpansion)
	}
	if isNull {
		if len(it.Modifiers) > 0 {
			return nil, modErr(it, "null cannot take modifiers")
		}
		if field == "" {
			return nil, modErr(it, "a keyword search cannot be null")
		}
		im.kind = itemNull
		return im, nil
	}
	fold := !im.cased
	switch {
	case exists:
		if len(it.Values) != 1 || it.Values[0].Kind != KindBool {
			return nil, modErr(it, "exists needs a single true or false")
		}
		im.kind = itemExists
		im.exists = it.Values[0].Raw == "true" || it.Values[0].Raw == "True" || it.Values[0].Raw == "TRUE"
	case re:
		if patternMod {
			return nil, modErr(it, "re cannot be combined with contains/startswith/endswith")
		}
		im.kind = itemRegex
		flags := ""
		if strings.Contains(reFlags, "i") {
			flags += "i"
		}
		if strings.Contains(reFlags, "m") {
			flags += "m"
		}
		if strings.Contains(reFlags, "s") {
			flags += "s"
		}
		for _, v := range it.Values {
			expr := v.Raw
			if flags != "" {
				expr = "(?" + flags + ")" + expr
			}
			rx, err := regexp.Compile(expr)
			if err != nil {
				return nil, modErr(it, "bad regular expression %q: %v", v.Raw, err)
			}
			im.res = append(im.res, rx)
		}
	case cidr:
		im.kind = itemCIDR
		for _, v := range it.Values {
			p, err := netip.ParsePrefix(strings.TrimSpace(v.Raw))
			if err != nil {
				a, aerr := netip.ParseAddr(strings.TrimSpace(v.Raw))
				if aerr != nil {
					return nil, modErr(it, "bad cidr %q: %v", v.Raw, err)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			im.nets = append(im.nets, p.Masked())
		}
	case numOp != "" || im.timePart != "":
		im.kind = itemNumeric
		op := numOp
		if op == "" {
			op = "eq"
		}
		for _, v := range it.Values {
			f, err := strconv.ParseFloat(strings.TrimSpace(v.Raw), 64)
			if err != nil {
				return nil, modErr(it, "%s needs a number, got %q", op, v.Raw)
			}
			im.nums = append(im.nums, numPred{op: op, val: f})
		}
	case fieldref:
		if patternMod {
			return nil, modErr(it, "fieldref cannot be combined with contains/startswith/endswith")
		}
		im.kind = itemFieldref
		for _, v := range it.Values {
			ref, err := mapField(v.Raw)
			if err != nil {
				return nil, err
			}
			im.refs = append(im.refs, ref)
		}
	default:
		im.kind = itemPattern
		plainValues := len(it.Modifiers) == 0 || (len(it.Modifiers) == 1 && (im.all || im.neq || im.cased))
		for i, v := range vals {
			var num *float64
			if plainValues && i < len(it.Values) && (it.Values[i].Kind == KindInt || it.Values[i].Kind == KindFloat) {
				if f, err := strconv.ParseFloat(it.Values[i].Raw, 64); err == nil {
					num = &f
				}
			}
			im.patNum = append(im.patNum, num)
			if field == "" && !patternMod {
				// Keyword searches match anywhere in the event's text.
				if !v.startsWithStar() {
					v = append(sstr{{wc: '*'}}, v...)
				}
				if !v.endsWithStar() {
					v = append(v[:len(v):len(v)], part{wc: '*'})
				}
			}
			im.pats = append(im.pats, compilePattern(v, fold))
		}
	}
	if im.neq && (im.kind == itemNull || im.kind == itemExists) {
		return nil, modErr(it, "neq cannot apply to null or exists")
	}
	return im, nil
}

// windashChars are the dash variants the windash modifier permutes.
var windashChars = []string{"-", "/", "–", "—", "―"}

// windash expands every flag dash (a - or / at a word start) into all variants.
func windash(v sstr) ([]sstr, error) {
	out := []sstr{nil}
	prevWord := false
	for pi, p := range v {
		if p.wc != 0 {
			for i := range out {
				out[i] = append(out[i], p)
			}
			prevWord = false
			continue
		}
		var segs []string // alternating literal / dash slots
		start := 0
		for i := 0; i < len(p.lit); i++ {
			c := p.lit[i]
			next := byte(0)
			if i+1 < len(p.lit) {
				next = p.lit[i+1]
			} else if pi+1 < len(v) && v[pi+1].wc == 0 && v[pi+1].lit != "" {
				next = v[pi+1].lit[0]
			}
			if (c == '-' || c == '/') && !prevWord && isWordByte(next) {
				segs = append(segs, p.lit[start:i], "")
				start = i + 1
			}
			prevWord = isWordByte(c)
		}
		segs = append(segs, p.lit[start:])
		for si, s := range segs {
			if si%2 == 0 {
				for i := range out {
					out[i] = append(out[i], part{lit: s})
				}
				continue
			}
			if len(out)*len(windashChars) > maxExpansion {
				return nil, fmt.Errorf("windash creates more than %d values", maxExpansion)
			}
			var next []sstr
			for _, o := range out {
				for _, d := range windashChars {
					n := append(o[:len(o):len(o)], part{lit: d})
					next = append(next, n)
				}
			}
			out = next
		}
	}
	for i := range out {
		out[i] = out[i].normalize()
	}
	return out, nil
}

func isWordByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// base64Offsets returns the three encodings of s at byte offsets 0, 1 and 2
// with the offset-dependent edges cut off.
func base64Offsets(s string) []string {
	start := [3]int{0, 2, 3}
	endCut := [3]int{0, 3, 2}
	var out []string
	for i := 0; i < 3; i++ {
		enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat(" ", i) + s))
		end := len(enc) - endCut[(len(s)+i)%3]
		if start[i] > end {
			continue
		}
		out = append(out, enc[start[i]:end])
	}
	return out
}

func encodeUTF16(s string, be bool) string {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u))
	for _, c := range u {
		if be {
			b = binary.BigEndian.AppendUint16(b, c)
		} else {
			b = binary.LittleEndian.AppendUint16(b, c)
		}
	}
	return string(b)
}

// expandPlaceholders replaces each %name% with every value the caller
// supplied for it (cartesian product); `\%` is a plain percent sign.
func expandPlaceholders(raw string, ph map[string][]string) ([]string, error) {
	out := []string{""}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' && i+1 < len(raw) && raw[i+1] == '%' {
			for j := range out {
				out[j] += "%"
			}
			i++
			continue
		}
		if c == '%' {
			end := strings.IndexByte(raw[i+1:], '%')
			if end > 0 {
				name := raw[i+1 : i+1+end]
				vals, ok := ph[name]
				if !ok || len(vals) == 0 {
					return nil, fmt.Errorf("%w %%%s%%", ErrUnresolvedPlaceholder, name)
				}
				if len(out)*len(vals) > maxExpansion {
					return nil, fmt.Errorf("%w: placeholder %%%s%% expands to too many values", ErrModifier, name)
				}
				var next []string
				for _, o := range out {
					for _, v := range vals {
						next = append(next, o+v)
					}
				}
				out = next
				i += end + 1
				continue
			}
		}
		for j := range out {
			out[j] += string(c)
		}
	}
	return out, nil
}

// timeOf reads a date field value as a time.
func timeOf(v any) (time.Time, bool) {
	switch x := v.(type) {
	case time.Time:
		return x, true
	case int64:
		return time.Unix(x, 0).UTC(), true
	case uint64:
		return time.Unix(int64(x), 0).UTC(), true
	case float64:
		return time.Unix(int64(x), 0).UTC(), true
	case string:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
			if t, err := time.Parse(layout, x); err == nil {
				return t, true
			}
		}
	}
	return time.Time{}, false
}

func timePartOf(t time.Time, part string) float64 {
	switch part {
	case "minute":
		return float64(t.Minute())
	case "hour":
		return float64(t.Hour())
	case "day":
		return float64(t.Day())
	case "week":
		_, w := t.ISOWeek()
		return float64(w)
	case "month":
		return float64(t.Month())
	}
	return float64(t.Year())
}
