package agent

import (
	"context"
	"sync/atomic"

	"github.com/mamori-edr/mamori/internal/agent/respond"
	"github.com/mamori-edr/mamori/internal/wire"
)

// actionsState is the response-action side of the agent.
type actionsState struct {
	isolator atomic.Pointer[respond.Isolator]
}

// runActions re-applies a recorded isolation, then long-polls the server
// for response actions until ctx is done.
func (a *Agent) runActions(ctx context.Context) error {
	iso := &respond.Isolator{DataDir: a.cfg.DataDir, Endpoints: a.endpointURLs}
	if err := iso.Restore(ctx); err != nil {
		a.log.Error("isolation state not restored", "err", err)
	} else if st := iso.Status(); st.Isolated {
		a.log.Warn("host isolated: isolation re-applied", "since", st.Since, "allowed", st.Allowed)
	}
	a.acts.isolator.Store(iso)
	r := &respond.Runner{
		Client:   a.client,
		BootID:   a.bootID,
		Killer:   &respond.Killer{BootID: a.bootID},
		Isolator: iso,
		Log:      a.log.With("component", "respond"),
	}
	return r.Run(ctx)
}

// endpointURLs lists every address the management channel uses: the
// server URLs and the proxies in front of them.
func (a *Agent) endpointURLs() []string {
	var out []string
	for _, e := range a.client.Endpoints() {
		out = append(out, e.URL)
		if e.Proxy != "" {
			out = append(out, e.Proxy)
		}
	}
	return out
}

// isolationStatus is nil until the action runner has started.
func (a *Agent) isolationStatus() *wire.IsolationStatus {
	iso := a.acts.isolator.Load()
	if iso == nil {
		return nil
	}
	st := iso.Status()
	return &st
}
