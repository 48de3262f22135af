package apiclient

import (
	"context"
	"net/url"
	"strconv"

	"github.com/mamori-edr/mamori/internal/server/api"
)

// CreateAction queues a response action (isolate, release, kill) for a host.
func (c *Client) CreateAction(ctx context.Context, hostID, tenant string, req api.ActionRequest) (api.Action, error) {
	var out api.Action
	err := c.do(ctx, "POST", api.Prefix+"/hosts/"+url.PathEscape(hostID)+"/actions", tenantQuery(tenant), req, &out)
	return out, err
}

// Actions lists the newest actions of a host (of the tenant if hostID is
// empty), newest first; limit <= 0 takes the server's default.
func (c *Client) Actions(ctx context.Context, hostID, tenant string, limit int) ([]api.Action, error) {
	q := tenantQuery(tenant)
	if q == nil {
		q = url.Values{}
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := api.Prefix + "/actions"
	if hostID != "" {
		path = api.Prefix + "/hosts/" + url.PathEscape(hostID) + "/actions"
	}
	var out api.ActionsResponse
	err := c.do(ctx, "GET", path, q, nil, &out)
	return out.Actions, err
}

// Action returns one action and its outcome.
func (c *Client) Action(ctx context.Context, id, tenant string) (api.Action, error) {
	var out api.Action
	err := c.do(ctx, "GET", api.Prefix+"/actions/"+url.PathEscape(id), tenantQuery(tenant), nil, &out)
	return out, err
}
