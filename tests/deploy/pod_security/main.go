// Command pod_security evaluates a Pod (JSON on stdin) against the Pod Security Standards
// with the same library the kube-apiserver's PodSecurity admission plugin runs, and prints
// {"baseline": [reasons...], "restricted": [reasons...]} (empty list: allowed).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

func main() {
	var pod corev1.Pod
	if err := json.NewDecoder(os.Stdin).Decode(&pod); err != nil {
		fmt.Fprintln(os.Stderr, "pod_security:", err)
		os.Exit(2)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pod_security:", err)
		os.Exit(2)
	}
	out := map[string][]string{}
	for _, level := range []api.Level{api.LevelBaseline, api.LevelRestricted} {
		reasons := []string{}
		results := evaluator.EvaluatePod(api.LevelVersion{Level: level, Version: api.LatestVersion()}, &pod.ObjectMeta, &pod.Spec)
		for _, result := range results {
			if !result.Allowed {
				reasons = append(reasons, result.ForbiddenReason+" ("+result.ForbiddenDetail+")")
			}
		}
		out[string(level)] = reasons
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
}
