"""A local server that speaks TF Serving's REST API, for development and tests.

  python -m export.serve --model_base_path models/autorisk [--port 8501] [--host 127.0.0.1] \
      [--model_name NAME] [--max_request_bytes 33554432] [--max_users 1024] \
      [--max_events 262144] [--poll_seconds 2] [--index index/]

Production serves the same SavedModel with the official `tensorflow/serving` image
(BUILD.md). This server loads the newest version under `--model_base_path`, picks up a newer
one without a restart, and answers:

- `POST /v1/models/<name>[/versions/<v>]:predict` with `instances` (row format) or
  `inputs` (columnar), optional `signature_name`;
- `GET /v1/models/<name>[/versions/<v>]` (version status) and `.../metadata` (signatures);
- with `--index` (an `autorisk_tf.search` index), `POST /v1/models/<name>[/versions/<v>]
  :neighbours`, an extension beside TF Serving's API: `{"key": "u1", "k": 10}` or
  `{"instances": [<raw events of a user>, ...], "k": 10}` -> `{"results": [{"query": ...,
  "neighbours": [{"key": ..., "similarity": ...}, ...]}]}`; 400 for an unknown key, and
  for an index built from another model than the version asked for.

Errors get TF Serving's body, `{"error": "<message>"}`: 400 for a bad request (the message
names the problem), 404 for an unknown model or version. Unknown categories and missing
values are normal input. Built on aiohttp; the model runs in worker threads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import json
import logging
import os
import sys
import threading

import numpy as np
from aiohttp import web

from autorisk_tf.contract import SCHEMA_ASSET, SERVING_DEFAULT
from autorisk_tf.data import events
from autorisk_tf.data.fingerprint import saved_model_fingerprint
from autorisk_tf.data.schema import parse_schema
from autorisk_tf.data.sequence_example import LENGTH_INPUT, TIMESTAMP_INPUT

LOG = logging.getLogger("export.serve")
_DTYPES = {"DT_STRING": "string", "DT_FLOAT": "float", "DT_DOUBLE": "float",
           "DT_INT64": "int", "DT_INT32": "int"}


class BadRequest(ValueError):
    """A request the server answers with 400 and this message."""


class NotFound(LookupError):
    """A model, version or signature that is not there: 404 with this message."""


class Limits:
    """What one request may hold.

    Args:
        max_request_bytes: int. Body size.
        max_users: int. Users (batch rows).
        max_events: int. Users x padded events.
    """

    def __init__(self, max_request_bytes: int = 32 << 20, max_users: int = 1024,
                 max_events: int = 262_144):
        self.max_request_bytes = max_request_bytes
        self.max_users = max_users
        self.max_events = max_events


class ServedVersion:
    """One loaded SavedModel version and its signatures' input and output specs.

    Args:
        path: str. The version folder.
        version: int. Its number.
    """

    def __init__(self, path: str, version: int):
        import tensorflow as tf
        from google.protobuf import json_format
        from tensorflow.core.protobuf import saved_model_pb2

        self.path = path
        self.version = version
        self.model = tf.saved_model.load(path)
        self.fingerprint = saved_model_fingerprint(path)
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        defs = proto.meta_graphs[0].signature_def
        self.signature_defs = {name: json_format.MessageToDict(defs[name])
                               for name in defs if not name.startswith("__")}
        self.inputs = {name: {key: (_DTYPES.get(spec["dtype"], spec["dtype"]),
                                    len(spec.get("tensorShape", {}).get("dim", [])))
                              for key, spec in d.get("inputs", {}).items()}
                       for name, d in self.signature_defs.items()}
        schema_path = os.path.join(path, SCHEMA_ASSET)
        self.parser = None  # versions exported before the schema asset: generic checks only
        if os.path.exists(schema_path):
            with open(schema_path, encoding="utf-8") as f:
                self.parser = events.RowParser(parse_schema(f.read(), source=schema_path))

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls a signature on numpy inputs; returns numpy outputs."""
        import tensorflow as tf

        outputs = self.model.signatures[signature](
            **{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}


class ModelRegistry:
    """The versions of one model under a base path; serves the newest.

    Args:
        base_path: str. TF Serving's `--model_base_path`: numbered version folders.
        name: str. The model name in URLs.
    """

    def __init__(self, base_path: str, name: str):
        self.base_path = base_path
        self.name = name
        self.current: ServedVersion | None = None
        self.failed: dict[int, str] = {}
        self._lock = threading.Lock()

    def available_versions(self) -> list[int]:
        """Numbered folders holding a saved_model.pb, oldest first."""
        if not os.path.isdir(self.base_path):
            return []
        return sorted(int(name) for name in os.listdir(self.base_path) if name.isdigit()
                      and os.path.exists(os.path.join(self.base_path, name, "saved_model.pb")))

    def refresh(self) -> bool:
        """Loads the newest version if it is not the one served; returns True on a change."""
        versions = [v for v in self.available_versions() if v not in self.failed]
        if not versions or (self.current and self.current.version >= versions[-1]):
            return False
        newest = versions[-1]
        try:
            loaded = ServedVersion(os.path.join(self.base_path, str(newest)), newest)
        except Exception as e:  # noqa: BLE001 - a broken version must not stop serving
            self.failed[newest] = f"{type(e).__name__}: {e}"
            LOG.error("could not load version %d: %s", newest, self.failed[newest])
            return False
        with self._lock:
            self.current = loaded
        LOG.warning("serving %s version %d from %s", self.name, newest, loaded.path)
        return True

    def get(self, name: str, version: int | None) -> ServedVersion:
        """The served version a URL asks for.

        Raises:
            NotFound: another model name, a version that is not served, or nothing loaded.
        """
        current = self.current
        if name != self.name:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if current is None or (version is not None and version != current.version):
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise NotFound(f"Servable not found for request: {what}")
        return current

    def status(self, version: int | None) -> dict:
        """The body of `GET /v1/models/<name>`, as TF Serving writes it."""
        current = self.current
        states = []
        if current is not None and version in (None, current.version):
            states.append({"version": str(current.version), "state": "AVAILABLE",
                           "status": {"error_code": "OK", "error_message": ""}})
        for failed, message in self.failed.items():
            if version in (None, failed):
                states.append({"version": str(failed), "state": "END",
                               "status": {"error_code": "UNKNOWN", "error_message": message}})
        if not states:
            raise NotFound(f"Could not find any versions of model {self.name}"
                           if version is None else
                           f"Could not find version {version} of model {self.name}")
        return {"model_version_status": states}


def _decode_string(value, where: str, text: bool) -> bytes:
    """A JSON string (or `{"b64": ...}`) to bytes.

    For raw event fields (`text`), bytes that are not UTF-8 are a bad request, as they are an
    `invalid_utf8` dead letter in beam.preprocess; serialized examples are binary.
    """
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{where}: a \\u escape decodes to a lone surrogate "
                             "(not UTF-8)") from None
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            decoded = base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise BadRequest(f"{where}: invalid base64") from None
        if text:
            try:
                decoded.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadRequest(f"{where}: base64 value is not UTF-8 ({e.reason})") from None
        return decoded
    raise BadRequest(f"{where}: expected a string, got {json.dumps(value)[:40]}")


def _flat(values):
    for value in values:
        if isinstance(value, list):
            yield from _flat(value)
        else:
            yield value


def _to_array(values, kind: str, rank: int, name: str, maybe_bools: bool = True,
              text: bool = False) -> np.ndarray:
    """A JSON (nested) list to an array of a signature input's type and rank.

    Rectangular lists of plain strings or numbers take numpy's fast path; anything else
    (base64 objects, nulls, mixed types) is checked value by value for a precise message.
    `maybe_bools` (the body holds `true` or `false` somewhere) looks for booleans among
    numbers, which numpy would turn into 1.0 and 0.0; `text` requires base64 strings to be
    UTF-8 (raw event fields).
    """
    where = f"input {name!r}"
    try:
        array = np.array(values)
    except ValueError:
        raise BadRequest(f"{where}: ragged lists (every user's events must be padded to the "
                         f"same length; `{LENGTH_INPUT}` gives the real lengths)") from None
    if array.ndim != rank and array.dtype != object:
        raise BadRequest(f"{where}: expected {rank} nested list level(s), got {array.ndim}")
    if array.size == 0 and array.dtype != object:
        return np.zeros(array.shape, {"string": object, "float": np.float32,
                                      "int": np.int64}[kind])
    if kind == "string" and array.dtype.kind == "U":
        try:
            return np.char.encode(array, "utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{where}: a \\u escape decodes to a lone surrogate "
                             "(not UTF-8)") from None
    if kind == "float" and array.dtype.kind == "f" and maybe_bools and any(
            isinstance(v, bool) for v in _flat(values)):
        raise BadRequest(f"{where}: expected numbers, got true or false")
    if kind == "float" and array.dtype.kind in "iuf":
        with np.errstate(over="ignore"):  # over float32's range: inf, a bad value below
            return array.astype(np.float32)
    if kind == "int" and array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype != object:
        wanted = {"string": "strings", "float": "numbers", "int": "integers"}[kind]
        raise BadRequest(f"{where}: expected {wanted}, got {array.dtype.kind!r} values "
                         f"such as {json.dumps(array.ravel()[:1].tolist())[:40]}")
    flat = array.ravel().tolist()
    if array.ndim != rank or any(isinstance(v, list) for v in flat):
        raise BadRequest(f"{where}: expected {rank} nested list level(s) of equal length")
    if kind == "string":
        return np.array([_decode_string(v, where, text) for v in flat],
                        dtype=object).reshape(array.shape)
    ok = (int,) if kind == "int" else (int, float)
    for v in flat:
        if isinstance(v, bool) or not isinstance(v, ok):
            raise BadRequest(f"{where}: expected {'integers' if kind == 'int' else 'numbers'}"
                             f", got {json.dumps(v)[:40]}")
    try:
        return np.array(flat, np.int64 if kind == "int" else np.float32).reshape(array.shape)
    except OverflowError:
        raise BadRequest(f"{where}: integer out of int64 range") from None


def parse_request(body, served: ServedVersion, limits: Limits, maybe_bools: bool = True):
    """A predict request's JSON to `(signature, inputs, row_format)`.

    Raw events are held to `beam.preprocess`'s rules (`RowParser.check_padded`), so a value
    that is a dead letter there is a bad request here.

    Raises:
        BadRequest: the message names the problem.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    signature = body.get("signature_name") or SERVING_DEFAULT
    if signature not in served.inputs:
        raise BadRequest(f"Serving signature name: \"{signature}\" not found in signature "
                         f"def; signatures: {sorted(served.inputs)}")
    specs = served.inputs[signature]
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("the request needs exactly one of \"instances\" (row format) or "
                         "\"inputs\" (columnar format)")
    unknown = set(body) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise BadRequest(f"unknown request key(s) {sorted(unknown)}")
    row_format = "instances" in body
    if row_format:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadRequest("\"instances\" must be a non-empty list")
        if len(specs) == 1:
            (only,) = specs
            instances = [i[only] if isinstance(i, dict) and set(i) == {only} else i
                         for i in instances]
            columns = {only: instances}
        else:
            columns = {}
            for index, instance in enumerate(instances):
                if not isinstance(instance, dict):
                    raise BadRequest(f"instance {index}: expected an object of named inputs")
                _check_names(set(instance), specs, f"instance {index}: ")
            columns = {name: [instance[name] for instance in instances] for name in specs}
    else:
        inputs = body["inputs"]
        if len(specs) == 1 and not isinstance(inputs, dict):
            inputs = {next(iter(specs)): inputs}
        if not isinstance(inputs, dict):
            raise BadRequest("\"inputs\" must be an object of named inputs")
        _check_names(set(inputs), specs, "")
        columns = inputs
    raw = LENGTH_INPUT in specs
    arrays = {name: _to_array(columns[name], kind, rank, name, maybe_bools, text=raw)
              for name, (kind, rank) in specs.items()}
    _check_batch(arrays, limits, raw=raw)
    if raw and served.parser is not None:
        # The window ends a day after now, not after the server started: it runs for weeks.
        served.parser.window = events.time_window()
        try:
            served.parser.check_padded(arrays, arrays[TIMESTAMP_INPUT], arrays[LENGTH_INPUT])
        except events.RejectedRow as e:
            raise BadRequest(f"{e.reason}: {e.detail}") from None
    return signature, arrays, row_format


def _check_names(names: set, specs: dict, prefix: str) -> None:
    unknown, missing = names - set(specs), set(specs) - names
    if unknown:
        raise BadRequest(f"{prefix}unknown input(s) {sorted(unknown)}; the signature takes "
                         f"{sorted(specs)}")
    if missing:
        raise BadRequest(f"{prefix}missing input(s) {sorted(missing)}")


def _check_batch(arrays: dict[str, np.ndarray], limits: Limits, raw: bool) -> None:
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise BadRequest(f"inputs disagree on the number of users: {sizes}")
    users = next(iter(sizes.values()))
    if users == 0:
        raise BadRequest("the request holds no users")
    if users > limits.max_users:
        raise BadRequest(f"{users} users in one request, over the limit of {limits.max_users}")
    if not raw:
        return
    steps = {name: a.shape[1] for name, a in arrays.items() if a.ndim == 2}
    if len(set(steps.values())) > 1:
        raise BadRequest(f"inputs disagree on the number of events: {steps} (pad every "
                         "field to the same length)")
    width = next(iter(steps.values()), 0)
    if users * width > limits.max_events:
        raise BadRequest(f"{users} users x {width} events is over the limit of "
                         f"{limits.max_events} events per request")
    length = arrays[LENGTH_INPUT]
    empty = np.flatnonzero(length <= 0)
    if empty.size:
        raise BadRequest(f"user {int(empty[0])} has an empty sequence ({LENGTH_INPUT} "
                         f"{int(length[empty[0]])}): send at least one event")
    over = np.flatnonzero(length > width)
    if over.size:
        raise BadRequest(f"user {int(over[0])}: {LENGTH_INPUT} {int(length[over[0]])} is "
                         f"over the {width} events sent")


def _jsonable(value: np.ndarray):
    if value.dtype == object or value.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in value.ravel()]
    return value.tolist()  # NaN and Infinity are written as TF Serving writes them


def format_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """Outputs to TF Serving's `predictions` (row) or `outputs` (columnar) body."""
    if not row_format:
        values = {name: _jsonable(v) for name, v in outputs.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    rows = [{name: _jsonable(v[i:i + 1])[0] if v.ndim == 1 else _jsonable(v[i])
             for name, v in outputs.items()} for i in range(next(iter(outputs.values()))
                                                             .shape[0])]
    if len(outputs) == 1:
        (name,) = outputs
        rows = [row[name] for row in rows]
    return {"predictions": rows}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _version(request: web.Request) -> int | None:
    text = request.match_info.get("version")
    if text is None:
        return None
    if not text.isdigit():
        raise BadRequest(f"version must be an integer, got {text!r}")
    return int(text)


MAX_NEIGHBOURS = 1000


def neighbour_results(keys: list, found, scores) -> dict:
    """The `:neighbours` response body for each query's found keys and similarities."""
    return {"results": [
        {"query": query, "neighbours": [{"key": str(n), "similarity": float(s)}
                                        for n, s in zip(found[i], scores[i], strict=True)
                                        if n is not None]}
        for i, query in enumerate(keys)]}


def make_app(registry: ModelRegistry, limits: Limits, workers: int = 2,
             poll_seconds: float = 2.0, index=None) -> web.Application:
    """The aiohttp application: routes, limits, error bodies and version polling.

    Args:
        registry: ModelRegistry. The served model's versions.
        limits: Limits. Request size limits.
        workers: int. Threads running the model.
        poll_seconds: float. How often to look for a new version.
        index: UserIndex or None. Serves `:neighbours` when given.
    """
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="predict")

    async def read_body(request: web.Request) -> tuple[dict, bytes]:
        if request.content_length and request.content_length > limits.max_request_bytes:
            raise BadRequest(f"request body of {request.content_length} bytes is over the "
                             f"limit of {limits.max_request_bytes}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(f"request body is over the limit of "
                             f"{limits.max_request_bytes} bytes") from None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        except RecursionError:
            raise BadRequest("the body nests deeper than any request can (a request has "
                             "at most 5 levels)") from None
        return body, raw

    async def predict(request: web.Request) -> web.Response:
        body, raw = await read_body(request)
        served = registry.get(request.match_info["name"], _version(request))
        signature, inputs, row_format = parse_request(
            body, served, limits, maybe_bools=b"true" in raw or b"false" in raw)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(pool, served.run, signature, inputs)
        return web.json_response(format_response(outputs, row_format),
                                 dumps=lambda o: json.dumps(o, allow_nan=True))

    async def neighbours(request: web.Request) -> web.Response:
        from autorisk_tf.search import SearchError

        body, raw = await read_body(request)
        served = registry.get(request.match_info["name"], _version(request))
        if index is None:
            raise NotFound("no similar-user index is served: start export.serve with --index")
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with `key` or `instances`")
        k = body.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_NEIGHBOURS:
            raise BadRequest(f"k must be an integer from 1 to {MAX_NEIGHBOURS}, got {k!r}")
        if index.model and served.fingerprint and index.model != served.fingerprint:
            raise BadRequest(f"the index holds embeddings of model {index.model}; version "
                             f"{served.version} is model {served.fingerprint}: rebuild the "
                             "index with this version's embeddings")
        loop = asyncio.get_running_loop()
        try:
            if ("key" in body) == ("instances" in body or "inputs" in body):
                raise BadRequest("give either `key` (a user in the index) or `instances` "
                                 "(raw events, as for :predict)")
            if "key" in body:
                found = await loop.run_in_executor(
                    pool, index.neighbours, str(body["key"]), k)
                result = {"results": [{"query": str(body["key"]), "neighbours": [
                    {"key": n, "similarity": s} for n, s in found]}]}
            else:
                request_body = {name: body[name] for name in ("instances", "inputs")
                                if name in body}
                signature, inputs, _ = parse_request(
                    request_body, served, limits,
                    maybe_bools=b"true" in raw or b"false" in raw)
                if signature != SERVING_DEFAULT:
                    raise BadRequest("neighbours of raw events take serving_default inputs")
                outputs = await loop.run_in_executor(pool, served.run, signature, inputs)
                found, scores = await loop.run_in_executor(
                    pool, index.search, outputs["embedding"], k)
                result = neighbour_results(list(range(len(found))), found, scores)
        except SearchError as e:
            raise BadRequest(str(e)) from None
        return web.json_response(result)

    async def status(request: web.Request) -> web.Response:
        if request.match_info["name"] != registry.name:
            raise NotFound(f"Could not find any versions of model {request.match_info['name']}")
        return web.json_response(registry.status(_version(request)))

    async def metadata(request: web.Request) -> web.Response:
        served = registry.get(request.match_info["name"], _version(request))
        return web.json_response({
            "model_spec": {"name": registry.name, "signature_name": "",
                           "version": str(served.version)},
            "metadata": {"signature_def": {
                "signature_def": served.signature_defs,
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap"}}})

    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except BadRequest as e:
            return _error(400, str(e))
        except NotFound as e:
            return _error(404, str(e))
        except web.HTTPException as e:
            return _error(e.status, e.reason)
        except Exception as e:  # noqa: BLE001 - never die on a request
            import tensorflow as tf

            if isinstance(e, tf.errors.InvalidArgumentError):
                return _error(400, e.message.split("\n")[0])
            LOG.exception("request failed")
            return _error(500, f"{type(e).__name__}: {e}")

    async def poll(app: web.Application):
        async def loop_forever():
            loop = asyncio.get_running_loop()
            while True:
                await asyncio.sleep(poll_seconds)
                try:
                    await loop.run_in_executor(None, registry.refresh)
                except Exception:  # noqa: BLE001 - keep polling
                    LOG.exception("version poll failed")

        task = asyncio.create_task(loop_forever())
        yield
        task.cancel()
        pool.shutdown(wait=False)

    app = web.Application(middlewares=[errors], client_max_size=limits.max_request_bytes)
    model = "/v1/models/{name:[^/:]+}"
    version = "/versions/{version:[^/:]+}"
    for prefix in (model, model + version):
        app.router.add_post(prefix + ":predict", predict)
        app.router.add_post(prefix + ":neighbours", neighbours)
        app.router.add_get(prefix, status)
        app.router.add_get(prefix + "/metadata", metadata)
    app.cleanup_ctx.append(poll)
    return app


def main(argv=None) -> int:
    """Parses the flags, loads the newest version and serves until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_base_path", required=True,
                        help="Folder of numbered SavedModel versions (export.savedmodel).")
    parser.add_argument("--model_name", default=None,
                        help="Name in the URLs (default: the folder's name).")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--host", default="127.0.0.1",
                        help="Interface to bind (0.0.0.0 exposes it to the network).")
    parser.add_argument("--max_request_bytes", type=int, default=32 << 20)
    parser.add_argument("--max_users", type=int, default=1024)
    parser.add_argument("--max_events", type=int, default=262_144,
                        help="Most users x padded events per request.")
    parser.add_argument("--poll_seconds", type=float, default=2.0,
                        help="How often to look for a new version.")
    parser.add_argument("--workers", type=int, default=2, help="Threads running the model.")
    parser.add_argument("--index", default=None,
                        help="A similar-user index folder (python -m autorisk_tf.search "
                             "build): serves :neighbours.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    base = os.path.abspath(args.model_base_path)
    name = args.model_name or os.path.basename(base)
    registry = ModelRegistry(base, name)
    registry.refresh()
    if registry.current is None:
        print(f"error: no loadable version under {base} (numbered folders from "
              "python -m export.savedmodel)" + (f": {registry.failed}" if registry.failed
                                                else ""), file=sys.stderr)
        return 2
    index = None
    if args.index:
        from autorisk_tf.search import UserIndex

        try:
            index = UserIndex.load(args.index)
        except (ValueError, OSError) as e:
            print(f"error: --index {args.index}: {e}", file=sys.stderr)
            return 2
    limits = Limits(args.max_request_bytes, args.max_users, args.max_events)
    print(f"serving {name} version {registry.current.version} on "
          f"http://{args.host}:{args.port}/v1/models/{name}", flush=True)
    try:
        web.run_app(make_app(registry, limits, args.workers, args.poll_seconds, index),
                    host=args.host, port=args.port, print=None)
    except OSError as e:  # the port is taken, or the host is not an interface of this machine
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
