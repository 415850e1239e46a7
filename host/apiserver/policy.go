package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/engine"
)

// policyFields are the JSON keys of engine.Policy.
var policyFields = jsonFields(reflect.TypeFor[engine.Policy]())

// servePolicy is PUT /v1/vms/{id}/policy. The body holds policy keys;
// keys left out keep their current values. Nothing changes unless the
// whole resulting policy is valid.
func (s *Server) servePolicy(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	p := v.Status().Policy
	if aerr := decodeBody(w, r, &p, policyFields); aerr != nil {
		aerr.write(w)
		return
	}
	if err := p.Validate(); err != nil {
		policyError(w, err)
		return
	}
	s.control(w, r, v, "set policy", func(ctx context.Context) error { return v.SetPolicy(ctx, p) })
}

func policyError(w http.ResponseWriter, err error) {
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		writeError(w, http.StatusBadRequest, fe.Field, fe.Msg)
		return
	}
	writeError(w, http.StatusBadRequest, "", err.Error())
}

// decodeBody reads a JSON object of at most maxBody bytes into dst, one
// key at a time so that an error names its key. Keys not in known are
// refused. Keys absent from the body leave dst as it was.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any, known map[string]bool) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &apiError{status: http.StatusUnsupportedMediaType,
				Error: api.Error{Error: fmt.Sprintf("Content-Type must be application/json, got %q", clip(ct))}}
		}
	} else {
		return &apiError{status: http.StatusUnsupportedMediaType, Error: api.Error{Error: "Content-Type must be application/json"}}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{status: http.StatusRequestEntityTooLarge,
				Error: api.Error{Error: fmt.Sprintf("request body larger than %d bytes", maxBody)}}
		}
		return badRequest("", "reading the request body: "+err.Error())
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return badRequest("", "the body must be one JSON object, e.g. {\"vcpus\": 4}")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !known[k] {
			return badRequest(clip(k), "unknown field (known: "+strings.Join(sortedKeys(known), ", ")+")")
		}
	}
	for _, k := range keys {
		one, _ := json.Marshal(map[string]json.RawMessage{k: obj[k]})
		if err := json.Unmarshal(one, dst); err != nil {
			return badRequest(k, valueError(err))
		}
	}
	return nil
}

// valueError says what was wrong with one value, without Go type names
// where a plainer word exists.
func valueError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.String()
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint32, reflect.Uint64:
			want = "a whole number"
		case reflect.Float64, reflect.Float32:
			want = "a number"
		case reflect.String:
			want = "a string"
		}
		if te.Type == reflect.TypeFor[engine.Duration]() {
			want = `a duration such as "30s"`
		}
		return fmt.Sprintf("want %s, got %s", want, te.Value)
	}
	msg := err.Error()
	return strings.TrimPrefix(msg, "json: ")
}

// jsonFields lists a struct's JSON keys.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
