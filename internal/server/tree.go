package server

import (
	"context"
	"fmt"
	"net/http"
	"sort"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
)

// Bounds on a process tree, so one call cannot walk a fork bomb's history.
const (
	maxAncestors     = 64
	maxDescDepth     = 32
	maxTreeProcs     = 2000
	maxEventsPerProc = 200
)

// buildTree assembles a process, its ancestors back to the root and its
// descendants, each with its events.
func buildTree(ctx context.Context, es store.EventStore, tenant, id string) (api.Tree, error) {
	t := api.Tree{Events: map[string][]schema.Event{}, Ancestors: []schema.Process{}, Descendants: []schema.Process{}}
	evs, err := es.ProcessEvents(ctx, tenant, []string{id})
	if err != nil {
		return t, fmt.Errorf("process events: %w", err)
	}
	if len(evs) == 0 {
		return t, errorf(http.StatusNotFound, "not_found", "process %s: no events stored", id)
	}
	byID := groupByEntity(evs)
	t.Process = mergeProcess(byID[id])
	t.Events[id] = capEvents(&t, byID[id])

	// Ancestors: follow parent_entity_id until the root or an unknown parent.
	seen := map[string]bool{id: true}
	cur, curEvents := t.Process, byID[id]
	for cur.PID != 1 && cur.ParentEntityID != "" && !seen[cur.ParentEntityID] {
		if len(t.Ancestors) >= maxAncestors {
			t.Truncated = true
			break
		}
		pid := cur.ParentEntityID
		seen[pid] = true
		pevs, err := es.ProcessEvents(ctx, tenant, []string{pid})
		if err != nil {
			return t, fmt.Errorf("process events: %w", err)
		}
		if len(pevs) == 0 {
			// Not stored: keep what the child's events say of it.
			t.Ancestors = append(t.Ancestors, stubParent(cur, curEvents))
			break
		}
		pe := groupByEntity(pevs)[pid]
		p := mergeProcess(pe)
		t.Ancestors = append(t.Ancestors, p)
		t.Events[pid] = capEvents(&t, pe)
		cur, curEvents = p, pe
	}
	for i, j := 0, len(t.Ancestors)-1; i < j; i, j = i+1, j-1 {
		t.Ancestors[i], t.Ancestors[j] = t.Ancestors[j], t.Ancestors[i]
	}

	// Descendants, level by level.
	children := map[string][]string{}
	procs := map[string]schema.Process{}
	frontier := []string{id}
	n := 0
	for depth := 0; len(frontier) > 0; depth++ {
		if depth >= maxDescDepth {
			t.Truncated = true
			break
		}
		cevs, err := es.ChildEvents(ctx, tenant, frontier)
		if err != nil {
			return t, fmt.Errorf("child events: %w", err)
		}
		var next []string
		for _, ev := range cevs {
			if ev.Process == nil || seen[ev.Process.EntityID] {
				continue
			}
			if n >= maxTreeProcs {
				t.Truncated = true
				break
			}
			seen[ev.Process.EntityID] = true
			n++
			next = append(next, ev.Process.EntityID)
			children[ev.Process.ParentEntityID] = append(children[ev.Process.ParentEntityID], ev.Process.EntityID)
		}
		if len(next) == 0 {
			break
		}
		all, err := es.ProcessEvents(ctx, tenant, next)
		if err != nil {
			return t, fmt.Errorf("process events: %w", err)
		}
		g := groupByEntity(all)
		for _, cid := range next {
			procs[cid] = mergeProcess(g[cid])
			t.Events[cid] = capEvents(&t, g[cid])
		}
		frontier = next
	}
	var walk func(string)
	walk = func(pid string) {
		kids := children[pid]
		sort.SliceStable(kids, func(i, j int) bool { return procs[kids[i]].StartTime.Before(procs[kids[j]].StartTime) })
		for _, c := range kids {
			t.Descendants = append(t.Descendants, procs[c])
			walk(c)
		}
	}
	walk(id)
	return t, nil
}

func capEvents(t *api.Tree, evs []schema.Event) []schema.Event {
	if len(evs) > maxEventsPerProc {
		t.Truncated = true
		return evs[:maxEventsPerProc]
	}
	return evs
}

// groupByEntity groups events by process entity id, each group in time order.
func groupByEntity(evs []schema.Event) map[string][]schema.Event {
	m := map[string][]schema.Event{}
	for _, ev := range evs {
		if ev.Process != nil {
			m[ev.Process.EntityID] = append(m[ev.Process.EntityID], ev)
		}
	}
	for _, g := range m {
		sort.SliceStable(g, func(i, j int) bool {
			if !g[i].Time.Equal(g[j].Time) {
				return g[i].Time.Before(g[j].Time)
			}
			return g[i].Seq < g[j].Seq
		})
	}
	return m
}

// mergeProcess folds a process's events (time order) into one description:
// the latest exec or snapshot names it, exit adds the exit code, hash the hashes.
func mergeProcess(evs []schema.Event) schema.Process {
	var p schema.Process
	have := false
	for _, ev := range evs {
		ep := ev.Process
		if ep == nil {
			continue
		}
		switch ev.Type {
		case schema.ProcessExec, schema.ProcessSnapshot:
			hash, code, sig := p.Hash, p.ExitCode, p.ExitSignal
			p, have = *ep, true
			if p.Hash == nil {
				p.Hash = hash
			}
			if p.ExitCode == nil {
				p.ExitCode, p.ExitSignal = code, sig
			}
		case schema.ProcessExit:
			if !have {
				p, have = *ep, true
			}
			p.ExitCode, p.ExitSignal = ep.ExitCode, ep.ExitSignal
		case schema.ProcessHash:
			if !have {
				p, have = *ep, true
			}
			if ep.Hash != nil {
				p.Hash = ep.Hash
			}
		default:
			if !have {
				p, have = *ep, true
			}
		}
	}
	return p
}

// stubParent describes a parent known only from its child's events.
func stubParent(child schema.Process, childEvents []schema.Event) schema.Process {
	p := schema.Process{EntityID: child.ParentEntityID, PID: child.PPID}
	for _, ev := range childEvents {
		if ev.Parent != nil && ev.Parent.EntityID == child.ParentEntityID {
			p.PID, p.Exe, p.Args = ev.Parent.PID, ev.Parent.Exe, ev.Parent.Args
		}
	}
	return p
}
