package sigma

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LoadError is a file that could not be read or parsed.
type LoadError struct {
	File string
	Err  error
}

func (e LoadError) Error() string {
	var pe *ParseError
	if errors.As(e.Err, &pe) && pe.File == e.File {
		return e.Err.Error()
	}
	return e.File + ": " + e.Err.Error()
}

func (e LoadError) Unwrap() error { return e.Err }

// maxRuleFile bounds the size of a rule file LoadDir reads.
const maxRuleFile = 4 << 20

// LoadDir parses every .yml/.yaml file under dir; bad files are returned as LoadErrors and do not stop the rest.
func LoadDir(dir string) ([]*Rule, []LoadError) {
	var rules []*Rule
	var errs []LoadError
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, LoadError{File: p, Err: err})
			return nil
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yml") || strings.HasSuffix(p, ".yaml")) {
			return nil
		}
		rs, err := LoadFile(p)
		if err != nil {
			errs = append(errs, LoadError{File: p, Err: err})
			return nil
		}
		rules = append(rules, rs...)
		return nil
	})
	if err != nil {
		errs = append(errs, LoadError{File: dir, Err: err})
	}
	return rules, errs
}

// LoadFile parses one rule file (all of its documents).
func LoadFile(p string) ([]*Rule, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxRuleFile {
		return nil, fmt.Errorf("rule file is %d bytes, larger than %d", st.Size(), maxRuleFile)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	rs, err := ParseRules(data)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.File = p
		}
		return nil, err
	}
	for _, r := range rs {
		r.Source = p
	}
	return rs, nil
}

// LoadReport summarises loading and compiling a rule set.
type LoadReport struct {
	Parsed      int
	Failed      int
	Detections  int
	Compiled    int
	Filters     int
	Correlation int
	// Reasons lists "source: error" for each file or rule that failed to parse or compile.
	Reasons []string
	// Matchers are the compiled detection rules.
	Matchers []*Matcher
}

// Report compiles every detection rule with opts and counts the results.
func Report(rules []*Rule, loadErrs []LoadError, opts CompileOptions) LoadReport {
	rep := LoadReport{Parsed: len(rules), Failed: len(loadErrs)}
	for _, e := range loadErrs {
		rep.Reasons = append(rep.Reasons, e.Error())
	}
	opts.Filters = append([]*Rule(nil), opts.Filters...)
	for _, r := range rules {
		if r.Filter != nil {
			rep.Filters++
			opts.Filters = append(opts.Filters, r)
		}
	}
	for _, r := range rules {
		switch {
		case r.Correlation != nil:
			rep.Correlation++
		case r.Filter != nil:
		default:
			rep.Detections++
			m, err := Compile(r, opts)
			if err != nil {
				rep.Reasons = append(rep.Reasons, fmt.Sprintf("%s: %v", r.Source, err))
				continue
			}
			rep.Compiled++
			rep.Matchers = append(rep.Matchers, m)
		}
	}
	sort.Strings(rep.Reasons)
	return rep
}

// String renders the report the way `mamori rules check` prints it.
func (r LoadReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "parsed %d (failed %d)\ndetections %d, evaluable %d\nfilters %d, correlations %d\n",
		r.Parsed, r.Failed, r.Detections, r.Compiled, r.Filters, r.Correlation)
	for _, s := range r.Reasons {
		b.WriteString("  " + s + "\n")
	}
	return b.String()
}
