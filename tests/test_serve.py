"""The REST contract: export.serve, and a real TF Serving model server when one is there.

The contract tests run against every server of the `server` fixture: the local
`export.serve`, and `tensorflow_model_server` when it is on PATH (started on a copy of the
test model), else skipped with that reason.
"""

import base64
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow as tf

from export.client import RestClient, ServingError, instances_from_rows
from tests.conftest import free_ports


def _wait(process, url, log):
    """Waits until the server answers the model's status (180 s at most)."""
    client = RestClient(url, "autorisk", timeout=5, retries=0)
    deadline = time.time() + 180
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            log.flush()
            raise RuntimeError(f"server exited: {open(log.name).read()[-2000:]}")
        try:
            if any(s["state"] == "AVAILABLE" for s in client.status()["model_version_status"]):
                return
        except (requests.ConnectionError, ServingError):
            pass
        time.sleep(0.5)
    if process is not None:
        process.kill()
    raise RuntimeError(f"{url} did not serve the model in 180 s")


@pytest.fixture(scope="module", params=["export.serve", "tensorflow_model_server"])
def server(request, exported, tmp_path_factory):
    """`(url, model base path, server kind)` of a running server of a copy of the model."""
    root = tmp_path_factory.mktemp("served")
    base = root / "autorisk"
    shutil.copytree(exported.base, base)
    (port,) = free_ports(1)
    if request.param == "export.serve":
        command = [sys.executable, "-m", "export.serve", "--model_base_path", str(base),
                   "--port", str(port), "--poll_seconds", "0.5", "--max_users", "64",
                   "--max_request_bytes", "2000000"]
    elif os.environ.get("TF_SERVING_URL"):
        watched = os.environ.get("TF_SERVING_MODEL_BASE_PATH")
        if not watched:
            pytest.skip("TF_SERVING_URL is set, TF_SERVING_MODEL_BASE_PATH (the folder that "
                        "server watches for model 'autorisk') is not")
        shutil.rmtree(watched, ignore_errors=True)
        shutil.copytree(exported.base, watched)
        url = os.environ["TF_SERVING_URL"].rstrip("/")
        with open(root / "server.log", "w") as log:
            _wait(None, url, log)
        yield url, watched, request.param
        return
    else:
        binary = shutil.which("tensorflow_model_server")
        if not binary:
            pytest.skip("neither tensorflow_model_server on PATH nor TF_SERVING_URL (TF "
                        "Serving cannot be installed here; BUILD.md shows the "
                        "tensorflow/serving image)")
        command = [binary, f"--rest_api_port={port}", "--port=0", "--model_name=autorisk",
                   f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        _wait(process, url, log)
        yield url, str(base), request.param
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def expected(exported):
    """Per-user embeddings from the SavedModel in-process, one user per call."""
    run = tf.saved_model.load(exported.version_dir).signatures["serving_default"]
    keys = [f"u{i:03d}" for i in range(12)]
    return {k: run(**{n: tf.constant(v) for n, v in exported.request([k]).items()})
            ["embedding"].numpy()[0] for k in keys}


def _rows(exported, keys):
    return [row for row in exported.rows if row["user_id"] in set(keys)]


def test_status_and_metadata(server):
    url, _, _ = server
    client = RestClient(url, "autorisk")
    (state,) = [s for s in client.status()["model_version_status"] if s["state"] == "AVAILABLE"]
    assert state["version"] == "1" and state["status"]["error_code"] == "OK"
    signatures = client.metadata()["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) >= {"serving_default", "embed_examples"}
    assert set(signatures["serving_default"]["inputs"]) == {
        "event_type", "amount", "amount_by_type", "item", "tags", "timestamp_ms", "length"}
    assert set(signatures["serving_default"]["outputs"]) == {"embedding", "length"}


def test_predict_row_and_columnar_formats_give_the_models_vectors(server, exported, expected):
    url, _, _ = server
    client = RestClient(url, "autorisk")
    keys = ["u002", "u000", "u007"]
    got_keys, outputs = client.embed_rows(_rows(exported, keys), exported.schema)
    order = [got_keys.index(k) for k in keys]
    np.testing.assert_allclose(outputs["embedding"][order], [expected[k] for k in keys],
                               atol=1e-5)
    _, instances = instances_from_rows(_rows(exported, keys), exported.schema, order=keys)
    predictions = client.predict(instances=instances)["predictions"]
    np.testing.assert_allclose([p["embedding"] for p in predictions],
                               [expected[k] for k in keys], atol=1e-5)
    assert [p["length"] for p in predictions] == [
        min(sum(r["user_id"] == k for r in exported.rows), 12) for k in keys]


def test_embed_examples_takes_base64_sequence_examples(server, exported, expected):
    url, _, _ = server
    records = {}
    for path in tf.io.gfile.glob(f"{exported.data}/*/*.tfrecord"):
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.SequenceExample.FromString(record.numpy())
            records[example.context.feature["key"].bytes_list.value[0].decode()] = record
    keys = ["u001", "u004"]
    body = [{"b64": base64.b64encode(records[k].numpy()).decode()} for k in keys]
    out = RestClient(url, "autorisk").predict(instances=body, signature_name="embed_examples")
    np.testing.assert_allclose([p["embedding"] for p in out["predictions"]],
                               [expected[k] for k in keys], atol=1e-5)


BAD_REQUESTS = [
    ("unknown field", lambda ok: {"instances": [{**ok, "colour": ["red"]}]}, "colour"),
    ("missing field", lambda ok: {"instances": [{k: v for k, v in ok.items()
                                                 if k != "amount"}]}, "amount"),
    ("wrong type", lambda ok: {"instances": [{**ok, "amount": ["a"] * len(ok["amount"])}]},
     "amount"),
    ("ragged", lambda ok: {"inputs": {k: [v, v[:1]] if isinstance(v, list) else [v, 1]
                                      for k, v in ok.items()}}, "ragged"),
    ("empty sequence", lambda ok: {"instances": [{**ok, "length": 0}]}, "empty"),
    ("over-long", lambda ok: {"instances": [ok] * 65}, "limit"),
    ("unknown signature", lambda ok: {"instances": [ok], "signature_name": "nope"}, "nope"),
    ("no instances", lambda ok: {"rows": [ok]}, "instances"),
    # values beam.preprocess makes dead letters of (export.serve holds requests to its rules)
    ("infinite amount", lambda ok: {"instances": [{**ok, "amount": [float("inf")]
                                                   + ok["amount"][1:]}]}, "amount"),
    ("huge amount", lambda ok: {"instances": [{**ok, "amount": [1e300] + ok["amount"][1:]}]},
     "amount"),
    ("boolean amount", lambda ok: {"instances": [{**ok, "amount": [True] + ok["amount"][1:]}]},
     "true or false"),
    ("far-future time", lambda ok: {"instances": [{**ok, "timestamp_ms": [253402214400000]
                                                   + ok["timestamp_ms"][1:]}]},
     "implausible_timestamp"),
    ("lone surrogate", lambda ok: {"instances": [{**ok, "item": ["\ud800"]
                                                  + ok["item"][1:]}]}, "surrogate"),
]
_VALUE_RULES = ("infinite amount", "huge amount", "boolean amount", "far-future time",
                "lone surrogate")


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_400_naming_the_problem(server, exported, case):
    url, _, kind = server
    name, make, word = case
    if kind != "export.serve" and name in ("empty sequence", "over-long", *_VALUE_RULES):
        pytest.skip("limits, empty-sequence and value checks are export.serve's own")
    # A user with a few events and no missing amount: plain JSON (no NaN) but for the fault.
    complete = next(key for key in sorted({row["user_id"] for row in exported.rows})
                    if len(_rows(exported, [key])) >= 3
                    and all(row["amount"] for row in _rows(exported, [key])))
    _, (ok,) = instances_from_rows(_rows(exported, [complete]), exported.schema)
    r = requests.post(f"{url}/v1/models/autorisk:predict", data=json.dumps(make(ok)),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400
    assert word in r.json()["error"]


def test_raw_http_errors_use_tf_servings_body(server):
    url, _, kind = server
    r = requests.post(f"{url}/v1/models/autorisk:predict", data=b"{not json", timeout=30)
    assert r.status_code == 400 and "error" in r.json()
    r = requests.post(f"{url}/v1/models/other:predict", json={"instances": [1]}, timeout=30)
    assert r.status_code == 404 and "other" in r.json()["error"]
    r = requests.post(f"{url}/v1/models/autorisk/versions/9:predict",
                      json={"instances": [1]}, timeout=30)
    assert r.status_code == 404 and "error" in r.json()
    if kind == "export.serve":
        r = requests.post(f"{url}/v1/models/autorisk:predict", data=b"x" * 2_000_001,
                          timeout=30)
        assert r.status_code == 400 and "limit" in r.json()["error"]
        r = requests.post(f"{url}/v1/models/autorisk:predict",
                          data=b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                          timeout=30)
        assert r.status_code == 400 and "nests deeper" in r.json()["error"]


def test_load_with_bad_requests_mixed_in(server, exported, expected):
    url, _, kind = server
    if kind != "export.serve":
        pytest.skip("the load test is for export.serve")
    keys = sorted(expected)
    rng = np.random.default_rng(0)
    plans = [(bool(rng.random() < 0.2), list(rng.choice(keys, int(rng.integers(1, 4)),
                                                          replace=False)))
             for _ in range(2000)]
    bodies = {}
    for key in keys:
        bodies[key] = instances_from_rows(_rows(exported, [key]), exported.schema)[1][0]

    def send(plan):
        bad, users = plan
        client = RestClient(url, "autorisk", timeout=60)
        if bad:
            try:
                client.predict(instances=[{**bodies[users[0]], "length": -1}])
            except ServingError as e:
                return e.status == 400
            return False
        _, instances = instances_from_rows(_rows(exported, users), exported.schema,
                                           order=users)
        out = client.predict(instances=instances)["predictions"]
        return all(np.allclose(p["embedding"], expected[u], atol=1e-5)
                   for p, u in zip(out, users, strict=True))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, plans))
    assert sum(bad for bad, _ in plans) > 300
    assert all(results), f"{results.count(False)} of {len(results)} wrong"
    client = RestClient(url, "autorisk")
    assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"


def _publish(client: RestClient, source: str, base: str, version: str) -> str:
    """Copies a version folder in as `version` (atomically); its state after up to 60 s."""
    shutil.copytree(source, os.path.join(base, f"{version}.partial"))
    os.rename(os.path.join(base, f"{version}.partial"), os.path.join(base, version))
    deadline = time.time() + 60
    while time.time() < deadline:
        states = {s["version"]: s["state"] for s in client.status()["model_version_status"]}
        if states.get(version) == "AVAILABLE":
            break
        time.sleep(0.5)
    return states.get(version)


def test_a_new_version_is_served_without_a_restart(server):
    url, base, _ = server
    client = RestClient(url, "autorisk")
    assert _publish(client, os.path.join(base, "1"), base, "2") == "AVAILABLE"
    assert client.metadata()["model_spec"]["version"] == "2"


@pytest.fixture(scope="module")
def with_classifier(exported, tmp_path_factory):
    """The exported model's version folder re-exported with a classifier (`explain`)."""
    from autorisk_tf.embed import load_embedder
    from autorisk_tf.finetune import SequenceClassifier
    from export import savedmodel

    root = tmp_path_factory.mktemp("with_classifier")
    classifier = SequenceClassifier(load_embedder(exported.model_dir), name="clf")
    classifier.build()
    classifier.save(str(root / "classifier.keras"))
    return savedmodel.export(exported.model_dir, str(root / "models"),
                             classifier_path=str(root / "classifier.keras"))


def test_explain_signature_over_rest(server, exported, with_classifier):
    """`"signature_name": "explain"` gives the SavedModel's reason codes over REST."""
    url, base, _ = server
    client = RestClient(url, "autorisk")
    assert _publish(client, with_classifier, base, "3") == "AVAILABLE"
    keys = ["u001", "u004", "u009"]
    got_keys, got = client.embed_rows(_rows(exported, keys), exported.schema, version=3,
                                      signature_name="explain")
    assert sorted(got_keys) == keys
    want = tf.saved_model.load(with_classifier).signatures["explain"](
        **{n: tf.constant(v) for n, v in exported.request(got_keys).items()})
    for name in ("score", "baseline_score", "attribution", "completeness_error"):
        np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-5, err_msg=name)
    assert got["timestamp_ms"].dtype == np.int64
    np.testing.assert_array_equal(got["timestamp_ms"], want["timestamp_ms"].numpy())
    np.testing.assert_array_equal(got["length"], want["length"].numpy())
    np.testing.assert_allclose(got["field_attribution"], want["field_attribution"].numpy(),
                               atol=1e-5)


def test_client_retries_connection_errors_only(monkeypatch):
    client = RestClient("http://127.0.0.1:9", "m", retries=2, backoff=0.0)
    calls = []

    class Response:
        status_code, reason, text = 400, "Bad Request", ""

        def json(self):
            return {"error": "bad thing"}

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise requests.ConnectionError("refused")
        return Response()

    monkeypatch.setattr(client._session, "request", flaky)
    with pytest.raises(ServingError, match="bad thing"):
        client.status()
    assert len(calls) == 3  # two connection errors retried, the HTTP 400 is not
    calls.clear()
    monkeypatch.setattr(client._session, "request",
                        lambda *a, **k: calls.append(1) or Response())
    with pytest.raises(ServingError):
        client.status()
    assert len(calls) == 1
    dead = RestClient(f"http://127.0.0.1:{free_ports(1)[0]}", "m", retries=1, backoff=0.0,
                      timeout=2)
    with pytest.raises(requests.ConnectionError):
        dead.status()


def test_client_rejects_rows_the_beam_job_would_reject(exported):
    rows = [dict(exported.rows[0], ts="not a time")]
    with pytest.raises(ValueError, match="row 0: bad_timestamp"):
        instances_from_rows(rows, exported.schema)


def _serve_with_index(exported, index_dir, root):
    """An export.serve process of the exported model with `--index`; `(process, url, log)`."""
    (port,) = free_ports(1)
    log = open(root / f"server-{port}.log", "w")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(
        [sys.executable, "-m", "export.serve", "--model_base_path", exported.base,
         "--port", str(port), "--index", str(index_dir)], stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}"
    _wait(process, url, log)
    return process, url, log


def test_neighbours_endpoint_serves_the_index_of_the_served_model(exported, tmp_path):
    from autorisk_tf.data.fingerprint import saved_model_fingerprint
    from autorisk_tf.search import UserIndex

    users = sorted({row["user_id"] for row in exported.rows})
    run = tf.saved_model.load(exported.version_dir).signatures["serving_default"]
    vectors = np.concatenate([run(**{n: tf.constant(v) for n, v in exported.request(
        users[i:i + 8]).items()})["embedding"].numpy() for i in range(0, len(users), 8)])
    fingerprint = saved_model_fingerprint(exported.version_dir)
    assert len(fingerprint) == 16
    index = UserIndex.build(users, vectors, model=fingerprint)
    index.save(str(tmp_path / "index"))
    UserIndex.build(users, vectors, model="another-model").save(str(tmp_path / "other"))
    process, url, log = _serve_with_index(exported, tmp_path / "index", tmp_path)
    try:
        path = f"{url}/v1/models/autorisk/versions/1:neighbours"
        answer = requests.post(path, json={"key": users[3], "k": 4}, timeout=60)
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["results"]
        want = index.neighbours(users[3], 4)
        assert [n["key"] for n in result["neighbours"]] == [k for k, _ in want]
        np.testing.assert_allclose([n["similarity"] for n in result["neighbours"]],
                                   [s for _, s in want], atol=1e-5)
        _, instances = instances_from_rows(_rows(exported, [users[5]]), exported.schema)
        answer = requests.post(path.replace("/versions/1", ""),  # NaN: missing numbers
                               data=json.dumps({"instances": instances, "k": 3}), timeout=60)
        (result,) = answer.json()["results"]
        assert result["neighbours"][0]["key"] == users[5]  # its own stored vector
        assert result["neighbours"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
        client = RestClient(url, "autorisk")
        by_key = client.neighbours(key=users[3], k=4)[users[3]]
        assert [n for n, _ in by_key] == [n for n, _ in want]
        near = client.neighbours(rows=_rows(exported, [users[5], users[6]]),
                                 schema=exported.schema, k=2)
        assert sorted(near) == [users[5], users[6]]
        assert all(found[0][0] == query for query, found in near.items())  # itself first
        for body, message in (({"key": "nobody"}, "key 'nobody' is not in the index"),
                              ({"key": users[0], "k": 0}, "k must be an integer from 1"),
                              ({"k": 3}, "give either `key`")):
            answer = requests.post(path, json=body, timeout=60)
            assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    process, url, log = _serve_with_index(exported, tmp_path / "other", tmp_path)
    try:
        answer = requests.post(f"{url}/v1/models/autorisk:neighbours",
                               json={"key": users[0]}, timeout=60)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith(
            f"the index holds embeddings of model another-model; version 1 is model "
            f"{fingerprint}")
    finally:
        process.terminate()
        process.wait(30)
        log.close()
