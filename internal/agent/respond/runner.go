package respond

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mamori-edr/mamori/internal/agent/transport"
	"github.com/mamori-edr/mamori/internal/wire"
)

// Caller posts an agent message and decodes the answer;
// *transport.Client is one.
type Caller interface {
	Call(ctx context.Context, path string, in, out any) error
}

// Runner long-polls the server for actions, executes them one at a time and
// reports each outcome.
type Runner struct {
	Client   Caller
	BootID   string
	Killer   *Killer
	Isolator *Isolator // nil: isolate and release fail
	Log      *slog.Logger
	// Wait is the long-poll time asked of the server; default wire.MaxPollWait s.
	Wait time.Duration
	// MinBackoff and MaxBackoff bound the pause after a failed poll;
	// defaults 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
}

// Run polls until ctx is cancelled; it returns nil then.
func (r *Runner) Run(ctx context.Context) error {
	wait, minB, maxB := r.Wait, r.MinBackoff, r.MaxBackoff
	if wait <= 0 {
		wait = wire.MaxPollWait * time.Second
	}
	if minB <= 0 {
		minB = time.Second
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}
	backoff := minB
	first := true
	for ctx.Err() == nil {
		var resp wire.ActionPollResponse
		err := r.Client.Call(ctx, wire.PathActionsPoll, wire.ActionPoll{BootID: r.BootID, WaitSeconds: int(wait / time.Second), First: first}, &resp)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.Log.Debug("action poll failed", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxB)
			continue
		}
		backoff, first = minB, false
		for _, a := range resp.Actions {
			res := r.Execute(ctx, a)
			r.Log.Info("action executed", "id", a.ID, "type", a.Type, "state", res.State, "error", res.Error)
			r.report(ctx, res)
		}
	}
	return nil
}

// report sends a result, retrying while the server is unreachable; a
// refusal (the action is no longer delivered, or unknown) is final.
func (r *Runner) report(ctx context.Context, res wire.ActionResult) {
	backoff := r.MinBackoff
	if backoff <= 0 {
		backoff = time.Second
	}
	for attempt := 0; ; attempt++ {
		err := r.Client.Call(ctx, wire.PathActionsResult, res, nil)
		var he *transport.HTTPError
		if err == nil || ctx.Err() != nil || errors.As(err, &he) || attempt >= 20 {
			if err != nil {
				r.Log.Warn("action result not reported", "id", res.ID, "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Execute runs one action and returns its result; it never panics on bad
// params, it fails the action.
func (r *Runner) Execute(ctx context.Context, a wire.Action) wire.ActionResult {
	out := wire.ActionResult{ID: a.ID, State: wire.ActionDone}
	fail := func(err error) wire.ActionResult {
		out.State, out.Error = wire.ActionFailed, err.Error()
		return out
	}
	var result any
	var err error
	switch a.Type {
	case wire.ActionKill:
		var p wire.KillParams
		if err := json.Unmarshal(a.Params, &p); err != nil {
			return fail(fmt.Errorf("kill params: %w", err))
		}
		if r.Killer == nil {
			return fail(errors.New("kill: not available on this agent"))
		}
		result, err = r.Killer.Kill(p.EntityID, p.Tree)
	case wire.ActionIsolate, wire.ActionRelease:
		if r.Isolator == nil {
			return fail(fmt.Errorf("%s: isolation not available on this agent", a.Type))
		}
		if a.Type == wire.ActionIsolate {
			result, err = r.Isolator.Isolate(ctx)
		} else {
			result, err = r.Isolator.Release(ctx)
		}
	default:
		return fail(fmt.Errorf("unknown action type %q", a.Type))
	}
	if b, merr := json.Marshal(result); merr == nil {
		out.Result = b
	}
	if err != nil {
		return fail(err)
	}
	return out
}
