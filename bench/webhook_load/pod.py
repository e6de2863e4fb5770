"""A realistic ~15 KB Pod CREATE AdmissionReview: what a Deployment's ReplicaSet sends."""

import json
from typing import Any


def _container(name: str, index: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/{name}:v2.14.{index}",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config=/etc/app/config.yaml", "--log-format=json", f"--shard={index}"],
        "ports": [
            {"name": "http", "containerPort": 8080 + index, "protocol": "TCP"},
            {"name": "pprof", "containerPort": 6060 + index, "protocol": "TCP"},
        ],
        "env": [
            {"name": f"FEATURE_FLAG_{n}", "value": "enabled" if n % 2 else "disabled"}
            for n in range(27)
        ]
        + [
            {
                "name": "GOMEMLIMIT",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}},
            },
        ],
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            {
                "name": "kube-api-access-x7k2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080 + index, "scheme": "HTTP"},
            "initialDelaySeconds": 10,
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": 8080 + index, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def pod() -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "checkout-api-5f7d8c9b6d-",
            "creationTimestamp": None,
            "labels": {
                "app.kubernetes.io/name": "checkout-api",
                "app.kubernetes.io/part-of": "shop",
                "app.kubernetes.io/version": "2.14.3",
                "pod-template-hash": "5f7d8c9b6d",
                "team": "payments",
            },
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-11-20T09:14:03Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "oomdump.io/critical": "80",
                "oomdump.io/ports": "6060,6061",
                "checksum/config": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f0",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "checkout-api-5f7d8c9b6d",
                    "uid": "1c0e7a52-8f38-4b8e-9d35-4f7a0a6d3c21",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-27T10:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:generateName": {},
                            "f:labels": {
                                f"f:{k}": {} for k in ("app", "team", "pod-template-hash")
                            },
                        },
                        "f:spec": {
                            f'k:{{"name":"{name}"}}': {
                                ".": {},
                                "f:env": {},
                                "f:image": {},
                                "f:ports": {},
                                "f:resources": {},
                                "f:livenessProbe": {},
                                "f:readinessProbe": {},
                            }
                            for name in ("api", "worker", "cache-warmer")
                        },
                    },
                }
            ],
        },
        "spec": {
            "volumes": [
                {"name": "config", "configMap": {"name": "checkout-api", "defaultMode": 420}},
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                },
            ],
            "initContainers": [_container("migrate", 9)],
            "containers": [
                _container(name, i) for i, name in enumerate(("api", "worker", "cache-warmer"))
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "checkout-api",
            "serviceAccount": "checkout-api",
            "securityContext": {"runAsUser": 10001, "fsGroup": 10001},
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {
                                    "matchLabels": {"app.kubernetes.io/name": "checkout-api"}
                                },
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }
                    ]
                }
            },
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "schedulerName": "default-scheduler",
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }


def review_body(uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> bytes:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "a8f3c1de-3b0e-4e47-9c3c-0c5d5f6e7a81",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod(),
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(review).encode()
