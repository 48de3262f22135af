package sigma

import (
	"strings"
	"unicode/utf8"
)

// part is one piece of a Sigma string: a literal run or a wildcard.
type part struct {
	lit string
	wc  byte // 0 for a literal, '*' or '?'
}

// sstr is a Sigma string value split into literals and wildcards.
type sstr []part

// parseSigmaString splits s on unescaped * and ? following the spec's escape
// rules: `\` escapes `*`, `?` and `\`; before any other character it is a
// plain backslash.
func parseSigmaString(s string) sstr {
	var out sstr
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			out = append(out, part{lit: b.String()})
			b.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			if i+1 < len(s) && (s[i+1] == '*' || s[i+1] == '?' || s[i+1] == '\\') {
				b.WriteByte(s[i+1])
				i++
			} else {
				b.WriteByte('\\')
			}
		case '*', '?':
			flush()
			out = append(out, part{wc: c})
		default:
			b.WriteByte(c)
		}
	}
	flush()
	return out
}

func literal(s string) sstr {
	if s == "" {
		return nil
	}
	return sstr{{lit: s}}
}

func (s sstr) hasWildcard() bool {
	for _, p := range s {
		if p.wc != 0 {
			return true
		}
	}
	return false
}

func (s sstr) startsWithStar() bool { return len(s) > 0 && s[0].wc == '*' }
func (s sstr) endsWithStar() bool   { return len(s) > 0 && s[len(s)-1].wc == '*' }

// plain returns the literal text; only valid when !hasWildcard.
func (s sstr) plain() string {
	var b strings.Builder
	for _, p := range s {
		b.WriteString(p.lit)
	}
	return b.String()
}

// mapLiterals applies f to every literal part, keeping wildcards.
func (s sstr) mapLiterals(f func(string) string) sstr {
	out := make(sstr, 0, len(s))
	for _, p := range s {
		if p.wc == 0 {
			p.lit = f(p.lit)
		}
		out = append(out, p)
	}
	return out
}

// normalize merges adjacent literals and collapses runs of '*'.
func (s sstr) normalize() sstr {
	var out sstr
	for _, p := range s {
		if p.wc == 0 && p.lit == "" {
			continue
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if p.wc == 0 && last.wc == 0 {
				last.lit += p.lit
				continue
			}
			if p.wc == '*' && last.wc == '*' {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

type patKind uint8

const (
	patEqual patKind = iota
	patPrefix
	patSuffix
	patContains
	patAny  // "*": any string value
	patGlob // star-only glob: prefix, ordered middles, suffix
	patWild // contains '?': backtracking glob over the parts
)

// pattern is a compiled wildcard pattern; no form uses regexp. When fold is set the needles are
// lowered and must be matched against lowered input.
type pattern struct {
	kind   patKind
	fold   bool
	lit    string   // equal/prefix/suffix/contains needle
	pre    string   // glob prefix
	suf    string   // glob suffix
	middle []string // glob middles
	parts  sstr     // patWild
}

func compilePattern(s sstr, fold bool) pattern {
	s = s.normalize()
	if fold {
		s = s.mapLiterals(strings.ToLower)
	}
	p := pattern{fold: fold}
	hasQ := false
	stars := 0
	for _, x := range s {
		switch x.wc {
		case '?':
			hasQ = true
		case '*':
			stars++
		}
	}
	switch {
	case hasQ:
		p.kind, p.parts = patWild, s
	case stars == 0:
		p.kind, p.lit = patEqual, s.plain()
	case len(s) == 1:
		p.kind = patAny
	case len(s) == 2 && s[0].wc == '*':
		p.kind, p.lit = patSuffix, s[1].lit
	case len(s) == 2 && s[1].wc == '*':
		p.kind, p.lit = patPrefix, s[0].lit
	case len(s) == 3 && s[0].wc == '*' && s[2].wc == '*':
		p.kind, p.lit = patContains, s[1].lit
	default:
		p.kind = patGlob
		i, j := 0, len(s)
		if s[0].wc == 0 {
			p.pre = s[0].lit
			i = 1
		}
		if s[j-1].wc == 0 {
			p.suf = s[j-1].lit
			j--
		}
		for _, x := range s[i:j] {
			if x.wc == 0 {
				p.middle = append(p.middle, x.lit)
			}
		}
	}
	return p
}

// match reports whether v (already lowered when p.fold) matches.
func (p *pattern) match(v string) bool {
	switch p.kind {
	case patEqual:
		return v == p.lit
	case patPrefix:
		return strings.HasPrefix(v, p.lit)
	case patSuffix:
		return strings.HasSuffix(v, p.lit)
	case patContains:
		return strings.Contains(v, p.lit)
	case patAny:
		return true
	case patGlob:
		if len(v) < len(p.pre)+len(p.suf) || !strings.HasPrefix(v, p.pre) || !strings.HasSuffix(v, p.suf) {
			return false
		}
		rest := v[len(p.pre) : len(v)-len(p.suf)]
		for _, m := range p.middle {
			i := strings.Index(rest, m)
			if i < 0 {
				return false
			}
			rest = rest[i+len(m):]
		}
		return true
	case patWild:
		return wildMatch(p.parts, v)
	}
	return false
}

// wildMatch matches s against parts where '*' spans any bytes and '?' is
// one UTF-8 character (or one invalid byte). It tracks the set of reachable
// byte offsets part by part, so it runs in O(len(parts)*len(s)) and never
// backtracks exponentially.
func wildMatch(p sstr, s string) bool {
	cur := make([]bool, len(s)+1)
	next := make([]bool, len(s)+1)
	cur[0] = true
	for _, x := range p {
		clear(next)
		live := false
		switch x.wc {
		case '*':
			for i := 0; i <= len(s); i++ {
				if cur[i] {
					for j := i; j <= len(s); j++ {
						next[j] = true
					}
					live = true
					break
				}
			}
		case '?':
			for i := 0; i < len(s); i++ {
				if cur[i] {
					_, w := utf8.DecodeRuneInString(s[i:])
					next[i+w] = true
					live = true
				}
			}
		default:
			for i := 0; i+len(x.lit) <= len(s); i++ {
				if cur[i] && s[i:i+len(x.lit)] == x.lit {
					next[i+len(x.lit)] = true
					live = true
				}
			}
		}
		if !live {
			return false
		}
		cur, next = next, cur
	}
	return cur[len(s)]
}
