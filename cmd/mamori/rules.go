package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/mamori-edr/mamori/internal/detect/fieldmap"
	"github.com/mamori-edr/mamori/internal/detect/sigma"
)

// rulesCheckReport is `mamori rules check --json`.
type rulesCheckReport struct {
	Dir          string   `json:"dir"`
	Parsed       int      `json:"parsed"`
	Failed       int      `json:"failed"`
	Detections   int      `json:"detections"`
	Evaluable    int      `json:"evaluable"`
	Filters      int      `json:"filters"`
	Correlations int      `json:"correlations"`
	Reasons      []string `json:"reasons"`
}

// cmdRulesCheck loads every Sigma rule under a directory and says which ones
// Mamori can evaluate, and why not for the rest. It needs no server.
func cmdRulesCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rules check", stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"want: mamori rules check DIR [--json]"}
	}
	rules, loadErrs := sigma.LoadDir(pos[0])
	if len(rules) == 0 && len(loadErrs) == 1 {
		return loadErrs[0] // the directory itself is unreadable
	}
	rep := sigma.Report(rules, loadErrs, sigma.CompileOptions{FieldMap: fieldmap.Field, Keywords: fieldmap.Keywords})
	if *asJSON {
		out := rulesCheckReport{Dir: pos[0], Parsed: rep.Parsed, Failed: rep.Failed, Detections: rep.Detections,
			Evaluable: rep.Compiled, Filters: rep.Filters, Correlations: rep.Correlation, Reasons: rep.Reasons}
		if out.Reasons == nil {
			out.Reasons = []string{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	_, err = fmt.Fprint(stdout, rep.String())
	return err
}
