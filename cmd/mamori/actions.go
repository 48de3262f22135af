package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/wire"
)

// cmdAction queues isolate, release or kill for a host and, with --wait,
// waits for the agent's outcome.
func cmdAction(ctx context.Context, typ string, args []string, stdout, stderr io.Writer) error {
	fs := newFlags(typ, stderr)
	cf := addClientFlags(fs)
	reason := fs.String("reason", "", "why (required; kept in the audit log)")
	id := fs.String("id", "", "action id (optional; a retry with the same id is refused, not repeated)")
	ttl := fs.Duration("ttl", time.Hour, "how long the action waits for an offline agent before it expires")
	wait := fs.Duration("wait", 0, "wait this long for the agent's outcome (0: only queue)")
	asJSON := fs.Bool("json", false, "print the action as JSON")
	var tree *bool
	if typ == wire.ActionKill {
		tree = fs.Bool("tree", false, "kill the process's descendants too (children first)")
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	want := 1
	if typ == wire.ActionKill {
		want = 2
	}
	if len(pos) != want {
		if typ == wire.ActionKill {
			return usageError{"want: mamori kill HOST ENTITY_ID [--tree] --reason TEXT"}
		}
		return usageError{fmt.Sprintf("want: mamori %s HOST --reason TEXT", typ)}
	}
	if strings.TrimSpace(*reason) == "" {
		return usageError{typ + ": --reason is required (the audit log records why)"}
	}
	if *ttl < time.Second {
		return usageError{typ + ": --ttl must be at least 1s"}
	}
	req := api.ActionRequest{ID: *id, Type: typ, Reason: *reason, TTLSeconds: int64(ttl.Seconds())}
	if typ == wire.ActionKill {
		req.Params, _ = json.Marshal(wire.KillParams{EntityID: pos[1], Tree: *tree})
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	a, err := c.CreateAction(ctx, pos[0], *cf.tenant, req)
	if err != nil {
		return err
	}
	if *wait > 0 {
		deadline := time.Now().Add(*wait)
		for (a.State == wire.ActionQueued || a.State == wire.ActionDelivered) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			if a, err = c.Action(ctx, a.ID, *cf.tenant); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(a); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s %s %s: %s", a.ID, a.Type, a.HostID, a.State)
		if len(a.Result) > 0 {
			fmt.Fprintf(stdout, " %s", a.Result)
		}
		if a.Error != "" {
			fmt.Fprintf(stdout, " error: %s", a.Error)
		}
		fmt.Fprintln(stdout)
	}
	switch {
	case a.State == wire.ActionFailed || a.State == wire.ActionExpired:
		return fmt.Errorf("action %s %s: %s", a.ID, a.State, a.Error)
	case *wait > 0 && a.State != wire.ActionDone:
		return fmt.Errorf("action %s still %s after %s", a.ID, a.State, *wait)
	}
	return nil
}

// cmdActions lists the actions of a host, or of every host.
func cmdActions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("actions", stderr)
	cf := addClientFlags(fs)
	limit := fs.Int("limit", 100, "newest actions to show (max 1000)")
	asJSON := fs.Bool("json", false, "print one JSON object per action")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError{"want: mamori actions [HOST]"}
	}
	host := ""
	if len(pos) == 1 {
		host = pos[0]
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	list, err := c.Actions(ctx, host, *cf.tenant, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, a := range list {
			if err := enc.Encode(a); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tTYPE\tSTATE\tCREATED\tBY\tREASON\tRESULT")
	for _, a := range list {
		res := string(a.Result)
		if a.Error != "" {
			res = "error: " + a.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.HostID, a.Type, a.State, a.Created.Local().Format(time.DateTime),
			a.Actor, oneLine(a.Reason, 40), oneLine(res, 80))
	}
	return tw.Flush()
}
