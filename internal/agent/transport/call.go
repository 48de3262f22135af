package transport

import (
	"context"
	"encoding/json"
	"fmt"
)

// Call posts in as JSON to an agent path (e.g. wire.PathActionsPoll) and
// decodes the answer into out (if not nil), with the same endpoint fallback
// as batches. Server refusals come back as *HTTPError.
func (c *Client) Call(ctx context.Context, path string, in, out any) error {
	raw, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return c.post(ctx, path, raw, false, out)
}
