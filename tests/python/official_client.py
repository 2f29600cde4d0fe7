"""The official Kubernetes Python client against a wasmkube server: typed CRUD, errors, list and watch.

Run by tests/python_client.rs with the server's kubeconfig in KUBECONFIG; exits non-zero on any failure.
"""

import os
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = [ns.metadata.name for ns in core.list_namespace().items]
assert "kube-system" in names, names

body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python", labels={"lang": "python"}), data={"k": "v"})
created = core.create_namespaced_config_map("default", body)
assert created.metadata.uid

try:
    core.create_namespaced_config_map("default", body)
    sys.exit("a duplicate create must fail")
except ApiException as e:
    assert e.status == 409, e.status

try:
    core.read_namespaced_config_map("missing", "default")
    sys.exit("a read of a missing object must fail")
except ApiException as e:
    assert e.status == 404, e.status

deployment = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py-web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="hello.wasm")]),
        ),
    ),
)
apps.create_namespaced_deployment("default", deployment)
scale = apps.patch_namespaced_deployment_scale("py-web", "default", {"spec": {"replicas": 5}})
assert scale.spec.replicas == 5, scale

listed = core.list_namespaced_config_map("default", label_selector="lang=python")
assert [cm.metadata.name for cm in listed.items] == ["from-python"], listed.items
version = listed.metadata.resource_version

seen = []


def follow():
    for event in watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=version, timeout_seconds=10
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            return


watcher = threading.Thread(target=follow)
watcher.start()
core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched")))
deleted = core.delete_namespaced_config_map("watched", "default")
# The client (v37) hands the Status over as a dict.
assert deleted["status"] == "Success" and deleted["details"]["name"] == "watched", deleted
watcher.join(timeout=15)
assert seen == [("ADDED", "watched"), ("DELETED", "watched")], seen
# The client writes a name's ":" as "%3A" in the path; the server reads it back.
role = client.RbacAuthorizationV1Api().read_cluster_role("system:monitoring")
assert role.metadata.name == "system:monitoring", role.metadata.name

# autoscaling/v1, as older code writes autoscalers: one CPU target, read back by v2 clients whole.
autoscaling_v1 = client.AutoscalingV1Api()
autoscaling_v1.create_namespaced_horizontal_pod_autoscaler(
    "default",
    client.V1HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V1CrossVersionObjectReference(api_version="apps/v1", kind="Deployment", name="py-web"),
            min_replicas=1,
            max_replicas=4,
            target_cpu_utilization_percentage=70,
        ),
    ),
)
v2 = client.AutoscalingV2Api().read_namespaced_horizontal_pod_autoscaler("py-web", "default")
assert v2.spec.metrics[0].resource.target.average_utilization == 70, v2.spec.metrics
assert autoscaling_v1.read_namespaced_horizontal_pod_autoscaler("py-web", "default").spec.target_cpu_utilization_percentage == 70

print("python client: ok")
