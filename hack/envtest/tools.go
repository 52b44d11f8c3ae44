//go:build tools

// Package envtest pins the commands this module builds; it has no code.
package envtest

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
