"""nutq on Ray Serve, locally on CPU: two replicas of the tiny checkpoint behind Ray's proxy, a real
redis-server as the shared voice store.

* 8 concurrent streaming requests all complete, and both replicas served some (`X-Nutq-Replica`);
* a voice uploaded through one replica is spoken through the other;
* killing one replica while requests run leaves new requests succeeding.

Needs the `ray` extra (Ray Serve) and redis-server; `.ci/run` installs both. About a minute on
two cores: Ray's own processes start first, then each replica loads the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'nutq[ray]'; .ci/run installs it)")
serve = pytest.importorskip("ray.serve")

import nutq  # noqa: E402
from nutq.serve.ray_app import NutqReplica, app_builder  # noqa: E402

from tests.deploy.redis_server import redis_url  # noqa: E402, F401 - the fixture
from tests.serve.helpers import connect, get_json  # noqa: E402
from tests.serve.test_voices_api import clip, multipart  # noqa: E402

TOKENS = 30  # speech tokens per request: long enough that concurrent requests overlap
SLOTS = 4  # engine slots per replica = max_ongoing_requests: 8 at once cannot all fit on one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tiny_checkpoint, redis_url):
    """The base URL of a 2-replica nutq application on a local Ray instance."""
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                 [str(Path(nutq.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = ["--model-dir", str(tiny_checkpoint), "--voice-store", redis_url, "--max-sessions", str(SLOTS),
                # every test request comes from one address: the per-client share would be half the slots
                "--max-streams-per-key", str(SLOTS),
                "--no-demo", "--max-new-tokens", "100"]
        # num_cpus 0: the two replicas and Ray's own actors share this machine's two cores.
        app = NutqReplica.options(num_replicas=2, max_ongoing_requests=SLOTS, ray_actor_options={"num_cpus": 0},
                                  health_check_period_s=1, health_check_timeout_s=30,
                                  graceful_shutdown_timeout_s=30).bind(args)
        serve.run(app, name="nutq", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while get_json(url, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "replicas did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def speak(url: str, voice: str = "default", seed: int = 0) -> tuple[int, str | None, int]:
    """(status, serving replica, audio bytes) of one streamed POST /v1/audio/speech (raw PCM); on an
    error, (status, its body, 0)."""
    conn = connect(url)
    try:
        body = {"model": "nutq", "input": "مرحبا بكم في نطق.", "voice": voice, "response_format": "pcm",
                "max_tokens": TOKENS, "seed": seed}
        conn.request("POST", "/v1/audio/speech", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return r.status, r.read().decode(errors="replace"), 0
        n = 0
        while chunk := r.read(4096):  # read as it streams
            n += len(chunk)
        return r.status, r.getheader("x-nutq-replica"), n
    finally:
        conn.close()


def test_concurrent_streams_spread_over_both_replicas(cluster):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: speak(cluster, seed=i), range(8)))
    assert all(status == 200 and n > 0 for status, _, n in results), results
    served = Counter(replica for _, replica, _ in results)
    assert len(served) == 2 and None not in served, served


def test_a_voice_uploaded_through_one_replica_is_spoken_through_the_other(cluster):
    body, ctype = multipart(clip(2.0, seed=3), id="shared-voice")
    conn = connect(cluster)
    try:
        conn.request("POST", "/v1/voices", body, {"Content-Type": ctype})
        r = conn.getresponse()
        assert r.status == 201, r.read()
        r.read()
        uploaded_on = r.getheader("x-nutq-replica")
    finally:
        conn.close()
    # The proxy picks the replica: ask until the other one answers (each answer must succeed).
    for _ in range(40):
        status, replica, n = speak(cluster, voice="shared-voice")
        assert status == 200 and n > 0
        if replica != uploaded_on:
            return
    pytest.fail(f"40 requests all went to the uploading replica {uploaded_on}")


def test_killing_a_replica_leaves_new_requests_succeeding(cluster):
    # requests in flight while one replica dies: those on the dead one may fail, which is the point
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(speak, cluster, "default", 100 + i) for i in range(4)]
        time.sleep(0.5)
        actors = [a for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("SERVE_REPLICA::nutq#nutq#")]
        assert len(actors) == 2, actors
        victim = ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"])
        ray.kill(victim, no_restart=True)
        for f in running:
            f.exception()  # wait; their outcome depends on where each ran
    results = [speak(cluster, seed=200 + i) for i in range(6)]
    assert all(status == 200 and n > 0 for status, _, n in results), results


def test_the_builder_checks_its_arguments_before_any_replica_starts(tiny_checkpoint):
    with pytest.raises(ValueError, match="unknown application argument"):
        app_builder({"serve_args": [], "model": "x"})
    with pytest.raises(ValueError, match="list of strings"):
        app_builder({"serve_args": "--max-sessions 4"})
    with pytest.raises(ValueError, match="unrecognized arguments: --no-such-flag"):
        app_builder({"serve_args": ["--no-such-flag"]})
    app = app_builder({"serve_args": ["--model-dir", str(tiny_checkpoint), "--max-sessions", "6",
                                      "--max-queue", "2", "--drain-timeout", "45"]})
    deployment = app._bound_deployment
    assert deployment.max_ongoing_requests == 8  # what the engine admits (slots + queue); Ray queues beyond
    assert deployment._deployment_config.graceful_shutdown_timeout_s == 45


def test_the_builder_resolves_what_a_replica_admits_without_loading_it(tiny_checkpoint, monkeypatch):
    import torch

    from nutq.engine.capacity import planned_capacity
    from nutq.engine.config import CPU_SESSIONS, DEFAULT_QUEUE, EngineConfig
    from nutq.checkpoints.files import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    app = app_builder({"serve_args": ["--model-dir", str(tiny_checkpoint)]})
    assert app._bound_deployment.max_ongoing_requests == CPU_SESSIONS + DEFAULT_QUEUE
    # on a (mocked) GPU: slots from free memory, as the engine sizes them
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**31))
    app = app_builder({"serve_args": ["--model-dir", str(tiny_checkpoint), "--max-queue", "3"]})
    expected = planned_capacity(EngineConfig(device="cuda", max_queue=3), resolve(tiny_checkpoint))
    assert app._bound_deployment.max_ongoing_requests == expected > 3 + CPU_SESSIONS


def test_deleting_the_application_lets_running_streams_finish(cluster):
    """Last in this module: it takes the application down. Ray stops routing to the replicas and
    waits (graceful_shutdown_timeout_s) for their requests: a stream running then ends whole (a
    cut-off chunked body would raise IncompleteRead here)."""
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(speak, cluster, "default", 300 + i) for i in range(2)]
        time.sleep(0.5)
        serve.delete("nutq")
        results = [f.result() for f in running]
    assert all(status == 200 and n > 0 for status, _, n in results), results
