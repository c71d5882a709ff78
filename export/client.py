"""A small client for TF Serving's REST API (and `export.serve`, which speaks the same).

  python -m export.client --schema schema.yaml --input events.csv \
      [--url http://127.0.0.1:8501] [--model_name autorisk] [--users u1,u2]

It takes raw event rows, the same dicts a user reads from their event table, parses them
with the Beam job's own `RowParser`, groups them per user and pads every user to the
longest, which is what the `serving_default` signature takes. Errors carry the server's
message; only connection errors are retried.

Example:
```python
client = RestClient("http://127.0.0.1:8501", "autorisk")
keys, outputs = client.embed_rows(rows, load_schema("schema.yaml"))
outputs["embedding"]  # float32 [len(keys), E]
```
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping

import numpy as np

from autorisk_tf.data.instances import (  # noqa: F401 - the client's API since it had them
    instances_from_rows,
    to_columns,
)
from autorisk_tf.data.schema import Schema, load_schema
from autorisk_tf.data.sequence_example import LENGTH_INPUT, TIMESTAMP_INPUT

# Outputs of integer type: events used, the `explain` signature's event times and class.
INTEGER_OUTPUTS = frozenset({LENGTH_INPUT, TIMESTAMP_INPUT, "class"})


class ServingError(RuntimeError):
    """A request the server answered with an error.

    Attributes:
        status: int. The HTTP status.
        message: str. The server's `error` message.
    """

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class RestClient:
    """Predict, status and metadata calls to one model of a TF Serving REST endpoint.

    Args:
        url: str. Server root, e.g. `http://127.0.0.1:8501`.
        model_name: str. The served model's name.
        timeout: float. Seconds per request.
        retries: int. Extra attempts after a connection error (not after an HTTP error).
        backoff: float. Seconds before the first retry, doubled after each.
    """

    def __init__(self, url: str = "http://127.0.0.1:8501", model_name: str = "autorisk",
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.2):
        import requests

        self.url = url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()

    def _path(self, version: int | None) -> str:
        suffix = f"/versions/{version}" if version is not None else ""
        return f"{self.url}/v1/models/{self.model_name}{suffix}"

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        import requests

        data = json.dumps(body).encode("utf-8") if body is not None else None
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = self._session.request(
                    method, url, data=data, timeout=self.timeout,
                    headers={"Content-Type": "application/json"} if data else None)
                break
            except requests.ConnectionError:
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text.strip() or response.reason}
        if response.status_code != 200:
            raise ServingError(response.status_code, payload.get("error", str(payload))
                               if isinstance(payload, dict) else str(payload))
        return payload

    def status(self, version: int | None = None) -> dict:
        """`GET /v1/models/<name>[/versions/<v>]`: the model's version states."""
        return self._call("GET", self._path(version))

    def metadata(self, version: int | None = None) -> dict:
        """`GET .../metadata`: the signatures, inputs and outputs."""
        return self._call("GET", self._path(version) + "/metadata")

    def predict(self, instances: list | None = None, inputs: dict | None = None,
                signature_name: str | None = None, version: int | None = None) -> dict:
        """`POST ...:predict` in the row (`instances`) or columnar (`inputs`) format.

        Returns:
            The server's JSON: `{"predictions": [...]}` or `{"outputs": ...}`.

        Raises:
            ServingError: the server's status and message.
            requests.ConnectionError: still no connection after the retries.
        """
        body = {"instances": instances} if inputs is None else {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        return self._call("POST", self._path(version) + ":predict", body)

    def neighbours(self, key: str | None = None, rows: Iterable[Mapping] | None = None,
                   schema: Schema | None = None, k: int = 10, version: int | None = None,
                   ) -> dict[str, list[tuple[str, float]]]:
        """`POST ...:neighbours` (`export.serve --index`): the k nearest users.

        Args:
            key: str or None. A user held in the server's index.
            rows: iterable of Mapping or None. Raw event rows instead (with `schema`):
                every user in them is embedded by the served version, then searched.
            schema: Schema or None. The event schema of `rows`.
            k: int. Neighbours per query.
            version: int or None. The version whose model must match the index.

        Returns:
            Query (the key, or each user of `rows`) -> `[(key, similarity), ...]`.

        Raises:
            ServingError: the server's status and message (400: unknown key, an index
                of another model).
        """
        if (key is None) == (rows is None):
            raise ValueError("give key or rows (with schema)")
        keys = [key]
        body: dict = {"key": key, "k": k}
        if rows is not None:
            keys, instances = instances_from_rows(rows, schema)
            body = {"inputs": _columnar(instances), "k": k}
        results = self._call("POST", self._path(version) + ":neighbours", body)["results"]
        return {query: [(n["key"], n["similarity"]) for n in result["neighbours"]]
                for query, result in zip(keys, results, strict=True)}

    def embed_rows(self, rows: Iterable[Mapping], schema: Schema, version: int | None = None,
                   signature_name: str | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
        """Embeds (or explains) the users of some raw event rows.

        Args:
            rows: iterable of dict. Raw event rows (column name to cell).
            schema: Schema. The events' schema.
            version: int or None. Model version; None: the newest.
            signature_name: str or None. `serving_default` (None) or `explain` (reason
                codes, with a classifier: `score`, `attribution`, `timestamp_ms`, ...).

        Returns:
            `(keys, outputs)`: outputs maps each output name (`embedding`, `length`,
            `score` when the model has one) to an array with one row per key: int64 for
            `INTEGER_OUTPUTS`, float32 otherwise.
        """
        keys, instances = instances_from_rows(rows, schema)
        outputs = self.predict(inputs=_columnar(instances), version=version,
                               signature_name=signature_name)["outputs"]
        return keys, {name: np.asarray(value, np.int64 if name in INTEGER_OUTPUTS
                                       else np.float32) for name, value in outputs.items()}


def _columnar(instances: list[dict]) -> dict[str, list]:
    return {name: [instance[name] for instance in instances] for name in instances[0]}


def read_event_rows(path: str, schema: Schema, users: set[str]) -> list[dict]:
    """The rows of an event table (CSV, JSON Lines or Parquet), read as beam.preprocess does.

    Args:
        path: str. The event table.
        schema: Schema. Its key column and CSV delimiter.
        users: set of str. Keep only these keys (exactly as written); empty: all.

    Returns:
        The rows (column name to raw cell), in file order.

    Raises:
        ValueError: a row the Beam job would reject as unreadable (its line and reason), or
            a user of `users` without rows.
    """
    from beam import sources

    rows, found = [], set()
    for raw in sources.read_rows(path, sources.detect_format(path), schema.csv_delimiter):
        if raw.blank:
            continue
        if raw.reason:
            raise ValueError(f"{path} line {raw.line}: {raw.reason}: {raw.detail}")
        key = raw.row.get(schema.key)
        if not users or key in users:
            rows.append(raw.row)
            found.add(key)
    missing = sorted(users - found)
    if missing:
        raise ValueError(f"no rows in {path} for user(s) {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if not rows:
        raise ValueError(f"{path} holds no event rows")
    return rows


def main(argv=None) -> int:
    """Reads an event table, sends its users, prints one JSON line per user.

    Exit status: 0 done; 1 the server could not be reached or refused the request, or the
    table holds a row the Beam job would reject; 2 a bad command line, schema or file.
    """
    import requests

    from autorisk_tf.data.schema import SchemaError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schema", required=True, help="The schema file of the events.")
    parser.add_argument("--input", required=True,
                        help="Event table (CSV, JSON Lines or Parquet, as beam.preprocess).")
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--model_name", default="autorisk")
    parser.add_argument("--users", default="", help="Comma-separated keys (default: all).")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--signature_name", default=None,
                        help="serving_default (embeddings, and the score with a classifier) "
                        "or explain (each event's share of the score).")
    args = parser.parse_args(argv)
    try:
        schema = load_schema(args.schema)
        rows = read_event_rows(args.input, schema, {u for u in args.users.split(",") if u})
    except (SchemaError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    client = RestClient(args.url, args.model_name, timeout=args.timeout)
    try:
        keys, outputs = client.embed_rows(rows, schema, signature_name=args.signature_name)
    except (ValueError, ServingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except requests.RequestException as e:
        print(f"error: cannot reach {args.url} ({type(e).__name__}; is the server running? "
              f"python -m export.serve ...)", file=sys.stderr)
        return 1
    for i, key in enumerate(keys):
        print(json.dumps({"key": key, **{name: value[i].tolist()
                                         for name, value in outputs.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
