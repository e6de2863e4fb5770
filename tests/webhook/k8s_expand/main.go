// Command k8s_expand applies the kubelet's own environment expansion to a container's env,
// so tests see what the watcher process would really get.
//
// Input (stdin, JSON): {"envFrom": {"NAME": "value", ...}, "env": [{"name": ..., "value": ...}, ...]}
// Output (stdout, JSON): {"NAME": "value", ...} as the container's process sees it.
//
// It follows kubelet_pods.go makeEnvironmentVariables: envFrom values first, then each
// env entry in order, its value expanded against the variables defined so far
// (expansion.MappingFuncFor(tmpEnv, serviceEnv); no services here).
package main

import (
	"encoding/json"
	"os"

	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

type envVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type input struct {
	EnvFrom map[string]string `json:"envFrom"`
	Env     []envVar          `json:"env"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		os.Stderr.WriteString("k8s_expand: " + err.Error() + "\n")
		os.Exit(2)
	}
	tmpEnv := map[string]string{}
	for name, value := range in.EnvFrom {
		tmpEnv[name] = value
	}
	mapping := expansion.MappingFuncFor(tmpEnv, map[string]string{})
	for _, item := range in.Env {
		value := item.Value
		if value != "" {
			value = expansion.Expand(value, mapping)
		}
		tmpEnv[item.Name] = value
	}
	if err := json.NewEncoder(os.Stdout).Encode(tmpEnv); err != nil {
		os.Exit(2)
	}
}
