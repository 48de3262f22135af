package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/wire"
)

// maxRequestBody bounds every JSON request body except agent batches.
const maxRequestBody = 1 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError is an error with the HTTP status and code it maps to.
type apiError struct {
	status int
	code   string
	seq    uint64
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to an HTTP status and code.
func statusOf(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: wire.CodeTooLarge, msg: err.Error()}
	case errors.Is(err, store.ErrBadQuery):
		return &apiError{status: http.StatusBadRequest, code: "bad_query", msg: err.Error()}
	case errors.Is(err, store.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: "not_found", msg: err.Error()}
	case errors.Is(err, store.ErrExists):
		return &apiError{status: http.StatusConflict, code: "exists", msg: err.Error()}
	}
	return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeStoreUnavailable, msg: err.Error()}
}

// writeAgentErr writes a wire.Error.
func writeAgentErr(w http.ResponseWriter, err error) {
	ae := statusOf(err)
	writeJSON(w, ae.status, wire.Error{Error: ae.msg, Code: ae.code, Seq: ae.seq})
}

// writeAPIErr writes an api.Error.
func writeAPIErr(w http.ResponseWriter, err error) {
	ae := statusOf(err)
	writeJSON(w, ae.status, api.Error{Error: ae.msg, Code: ae.code})
}

// decodeStrict decodes one JSON object from a size-limited body, rejecting
// unknown fields and trailing data.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "bad_request", "content type %q: want application/json", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "request body larger than %d bytes", maxRequestBody)
		}
		return errorf(http.StatusBadRequest, "bad_request", "request body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "bad_request", "request body: trailing data after the JSON object")
	}
	return nil
}
