// kpack-check decodes each document of a multi-document YAML stream (stdin) strictly into kpack's
// own v1alpha2 types and runs their webhook validation, so the resources locald writes are judged
// by kpack's code rather than by our reading of it. kpack's CRDs carry no schema: without this the
// only check would be a real cluster's admission webhook.
//
// Exit 0 when every document is valid; 1 with one line per problem on stderr otherwise.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pivotal/kpack/pkg/apis/build/v1alpha2"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

type resource interface {
	SetDefaults(context.Context)
	Validate(context.Context) *apis.FieldError
}

func newResource(apiVersion, kind string) (resource, error) {
	if apiVersion != "kpack.io/v1alpha2" {
		return nil, fmt.Errorf("apiVersion %q is not kpack.io/v1alpha2", apiVersion)
	}
	switch kind {
	case "Image":
		return &v1alpha2.Image{}, nil
	case "Builder":
		return &v1alpha2.Builder{}, nil
	case "ClusterBuilder":
		return &v1alpha2.ClusterBuilder{}, nil
	}
	return nil, fmt.Errorf("kind %q is not one this checker knows (Image, Builder, ClusterBuilder)", kind)
}

func check(doc []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	res, err := newResource(head.APIVersion, head.Kind)
	if err != nil {
		return err
	}
	asJSON, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	// Unknown fields are errors: a misspelt field would otherwise be dropped by the API server
	// without a word (the CRDs preserve unknown fields) and the build would run without it.
	dec := json.NewDecoder(bytes.NewReader(asJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(res); err != nil {
		return fmt.Errorf("%s: %w", head.Kind, err)
	}
	// The webhook defaults before it validates (a missing history limit is a nil pointer that
	// Validate dereferences). It also tells validation whether the cluster has a default
	// StorageClass; locald's resources ask for a cache volume, which needs one, so we say it does.
	ctx := context.WithValue(context.Background(), v1alpha2.HasDefaultStorageClass, true)
	res.SetDefaults(ctx)
	if fe := res.Validate(ctx); fe != nil {
		return fmt.Errorf("%s: %s", head.Kind, strings.ReplaceAll(fe.Error(), "\n", "; "))
	}
	return nil
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var problems []error
	count := 0
	for i, doc := range bytes.Split(append([]byte("\n"), input...), []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		count++
		if err := check(doc); err != nil {
			problems = append(problems, fmt.Errorf("document %d: %w", i+1, err))
		}
	}
	if count == 0 {
		problems = append(problems, errors.New("no YAML documents on stdin"))
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%d kpack resources valid\n", count)
}
