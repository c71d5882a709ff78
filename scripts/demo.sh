#!/usr/bin/env bash
# The main job on built-in simulated data: simulate -> preprocess (Beam) -> pre-train ->
# embed -> downstream AUC of logistic regression on the embeddings.
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=demo_out
export TF_CPP_MIN_LOG_LEVEL=2
rm -rf "$OUT"
# A step's title, with the time since the start (m:ss).
step() { printf '== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$1"; }

step "1. simulate a risk-control event log (1,000 users, 30 planted analogy quadruples, 5 fraud rings)"
$PY -m autorisk_tf.simulate --output_dir "$OUT/raw" --num_users 1000 --seed 7 --num_shards 4 \
  --num_analogies 30 --num_rings 5 --ring_size 5
# A few broken rows, to show that bad input is reported, not dropped or fatal.
printf 'user_id,event_time,event_type,channel,device,pay_method,amount,item\n%s\n%s\n%s\n' \
  'u_bad1,not-a-time,logon,app,known,,,' \
  'u_bad2,2024-02-01T10:00:00,payment,app,known,balance,12.x,Bus ticket' \
  'u_bad3,2024-02-01T10:00:00,payment' > "$OUT/raw/events/part-bad.csv"

step "2. preprocess: group, sort, analyse, write TFRecords (python -m beam.preprocess)"
$PY -m beam.preprocess --input "$OUT/raw/events/*.csv" \
  --schema autorisk_tf/schemas/simulated.yaml --labels "$OUT/raw/labels.csv" \
  --output_dir "$OUT/data" --max_len 256 2>/dev/null

step "3. what was written"
$PY - "$OUT" 2> >(grep -v -E "^(I0000|E0000|W0000|WARNING: All log|To enable the following)" >&2) <<'PY'
import glob, json, sys
from autorisk_tf.data import artifacts, reader
out = sys.argv[1]
art = artifacts.Artifacts.load(f"{out}/data/artifacts")
s = art.stats
print(f"rows in {s['rows_in']} = used {s['rows_used']} + truncated {s['rows_truncated']}"
      f" + rejected {s['rows_rejected']}  (reconciled: {s['reconciled']})")
print("rejected by reason:", s["rejected_by_reason"])
print("users by split:", s["users_by_split"], " history length:", s["history_length"])
for f in art.schema.fields:
    size = len(art.vocabularies.get(f.name, art.text_vocabularies.get(f.name,
                                                                      art.boundaries.get(f.name, []))))
    print(f"  field {f.name:<11} {f.kind:<12} {'boundaries' if f.kind == 'numeric' else 'vocabulary'}: {size}")
for line in open(glob.glob(f"{out}/data/dead_letter/*.jsonl")[0], encoding="utf-8"):
    d = json.loads(line); print(f"  dead letter: {d['reason']:<20} line {d['line']}: {d['raw']}")
ex = next(reader.read_sequences(f"{out}/data/test/*.tfrecord", art.schema))
print(f"first test user {ex['key']}: {ex['length']} events, is_risk={ex['label/is_risk']:.0f}")
for i in range(min(5, int(ex["length"]))):
    print("  ", ex["time/timestamp_ms"][i], ex["event/event_type"][i], ex["event/channel"][i],
          ex["event/amount"][i], ex["event/item"][i])
PY

step "3a. richer schema options on the same events: amounts bucketed per event type and fed"
echo "   as numbers too (bucket_by, continuous), item names as a multi-valued field of words"
sed -e 's/- {name: amount, kind: numeric, num_buckets: 32, log: true}/- {name: amount, kind: numeric, num_buckets: 32, log: true, bucket_by: event_type, min_count: 50, continuous: true}\n  - {name: item_words, column: item, kind: categorical, separator: " ", max_values: 4}/' \
  autorisk_tf/schemas/simulated.yaml > "$OUT/simulated_options.yaml"
$PY -m beam.preprocess --input "$OUT/raw/events/*.csv" --schema "$OUT/simulated_options.yaml" \
  --output_dir "$OUT/data_options" --max_len 256 2>/dev/null
$PY - "$OUT" 2>/dev/null <<'PY'
import sys
from autorisk_tf.data import artifacts
art = artifacts.Artifacts.load(f"{sys.argv[1]}/data_options/artifacts")
scales = art.numeric_scales["amount"]
print(f"global amount boundaries: {len(art.boundaries['amount'])}; own per event type:")
for kind, bounds in art.category_boundaries["amount"].items():
    mean, std = scales["categories"][kind]
    print(f"  {kind:<16} {len(bounds)} boundaries, median {bounds[len(bounds) // 2]:>9.2f};"
          f" log1p(amount) mean {mean:.2f} std {std:.2f}")
print("item_words, most frequent:", ", ".join(f"{w} ({n})"
                                             for w, n in art.vocabularies["item_words"][:6]))
PY

step "3b. hand-made features per user, the GBDT feature pool, on a 2-worker Dask cluster (python -m beam.features --runner DaskRunner)"
$PY -m beam.features --input "$OUT/raw/events/*.csv" \
  --schema autorisk_tf/schemas/simulated.yaml --output_dir "$OUT/features" \
  --runner DaskRunner --dask_workers 2 2>/dev/null
$PY - "$OUT" 2>/dev/null <<'PY'
import sys
from autorisk_tf.evaluate import load_features
keys, values, columns = load_features(f"{sys.argv[1]}/features")
print(f"{len(keys)} users x {len(columns)} features; user {keys[0]}:",
      ", ".join(f"{c}={v:.3g}" for c, v in list(zip(columns, values[0]))[:6]), "...")
PY

step "4. pre-train a small encoder (masked events, then quick thought; 300 steps; python -m autorisk_tf.train)"
$PY -m autorisk_tf.train --config autorisk_tf/configs/small.yaml --data "$OUT/data" \
  --model_dir "$OUT/pretrained" --eval_batches 5 2> >(grep -v -E "^(I0000|E0000|W0000|WARNING: All log|To enable)" >&2)
# The same encoder with random weights (0 steps), the baseline of the table below.
$PY -m autorisk_tf.train --config autorisk_tf/configs/small.yaml --data "$OUT/data" \
  --model_dir "$OUT/random_weights" --steps 0 --eval_batches 0 --verbose 0 2>/dev/null

step "5. embed every user (python -m autorisk_tf.embed)"
$PY -m autorisk_tf.embed --model_dir "$OUT/pretrained" --data "$OUT/data" --split all \
  --output "$OUT/embeddings/all" 2>/dev/null

step "6. downstream: logistic regression on embeddings, test-split AUC"
$PY -m autorisk_tf.evaluate --data "$OUT/data" --model_dir "$OUT/pretrained" \
  --model_dir "$OUT/random_weights" --labels is_risk,takeover 2>/dev/null

step "6b. fine-tune on takeover, then reason codes: which events made the score"
echo "   (python -m autorisk_tf.finetune, python -m autorisk_tf.explain; planted events marked *)"
$PY -m autorisk_tf.finetune --model_dir "$OUT/pretrained" --data "$OUT/data" --label takeover \
  --output_dir "$OUT/takeover" --epochs 6 --learning_rate 1e-3 2>/dev/null | tail -1
# The simulator's takeovers (planted_events.csv names their events) in the test split.
TAKEOVERS=$(awk -F, '$5 ~ /^takeover/ {print $1}' "$OUT/raw/planted_events.csv" | sort -u | paste -sd,)
$PY -m autorisk_tf.explain --model_dir "$OUT/takeover" --data "$OUT/data" --split test \
  --keys "$TAKEOVERS" --max_steps 512 --output "$OUT/reasons" 2>/dev/null
$PY - "$OUT" 2>/dev/null <<'PY'
import sys
import pyarrow.parquet as pq
from autorisk_tf.explain import read_planted
out = sys.argv[1]
planted = read_planted(f"{out}/raw/planted_events.csv")
rows = pq.read_table(f"{out}/reasons/explanations.parquet").to_pylist()
hits = {r["key"]: [e["timestamp_ms"] in planted[r["key"]] for e in r["top_events"]] for r in rows}
top = max(rows, key=lambda r: r["score"])
print("   planted events among its top 5:", " ".join("*" if h else "." for h in hits[top["key"]]))
flagged = [r["key"] for r in rows if r["score"] > 0.5]
print(f"   flagged takeovers (score > 0.5) whose top 5 hold >= 2 of the 3 planted events:"
      f" {sum(sum(hits[k]) >= 2 for k in flagged)} of {len(flagged)}")
PY

step "7. export a SavedModel that TF Serving loads as it is (python -m export.savedmodel)"
$PY -m export.savedmodel --model_dir "$OUT/pretrained" --output "$OUT/models/autorisk" \
  2>/dev/null

step "8. batch-embed the test split with Beam RunInference (python -m beam.embed)"
$PY -m beam.embed --model "$OUT/models/autorisk/1" --input "$OUT/data/test/*.tfrecord" \
  --output "$OUT/embeddings/beam_test" 2>/dev/null

step "8b. who else behaves like a fraud ring member: a similar-user index (python -m autorisk_tf.search)"
$PY -m autorisk_tf.search build --embeddings "$OUT/embeddings/all.parquet" \
  --output "$OUT/index" 2>/dev/null
$PY -m autorisk_tf.search query --index "$OUT/index" --key ring000-00 --k 5 \
  --data "$OUT/data" 2>/dev/null | tee "$OUT/ring_query.txt"
echo "   of its ring: $(grep -cE '^ +[0-9]+\. ring000-' "$OUT/ring_query.txt") of 5 (4 accounts share its script)"

step "9. serve it over TF Serving's REST API (python -m export.serve); one request with curl"
PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$PY -m export.serve --model_base_path "$OUT/models/autorisk" --port "$PORT" \
  > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
# The raw events of the first test user, as the client sends them (padded, one per field).
$PY - "$OUT" > "$OUT/request.json" 2>/dev/null <<'PY'
import csv, glob, json, sys
import pyarrow.parquet as pq
from autorisk_tf.data.schema import load_schema
from export.client import instances_from_rows
out = sys.argv[1]
user = pq.read_table(sorted(glob.glob(f"{out}/embeddings/beam_test-*.parquet"))[0],
                     columns=["key"])["key"][0].as_py()
rows = [row for path in sorted(glob.glob(f"{out}/raw/events/*.csv"))
        for row in csv.DictReader(open(path, encoding="utf-8", newline=""))
        if row["user_id"] == user]
_, instances = instances_from_rows(rows, load_schema(f"{out}/pretrained/schema.yaml"))
json.dump({"instances": instances}, sys.stdout)
PY
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models/autorisk" > /dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/serve.log"; exit 1; }
  sleep 1
done
echo "\$ curl http://127.0.0.1:$PORT/v1/models/autorisk"
curl -s "http://127.0.0.1:$PORT/v1/models/autorisk"; echo
echo "\$ curl -X POST -d @$OUT/request.json http://127.0.0.1:$PORT/v1/models/autorisk:predict"
curl -s -X POST -d @"$OUT/request.json" "http://127.0.0.1:$PORT/v1/models/autorisk:predict" \
  | $PY -c 'import json, sys; p = json.load(sys.stdin)["predictions"][0]; e = p["embedding"]; print(json.dumps({"predictions": [{"length": p["length"], "embedding": [round(v, 4) for v in e[:6]] + ["..."]}]}), "(%d dimensions)" % len(e))'
kill $SERVER; wait $SERVER 2>/dev/null || true

step "10. the evaluation report: maps, few-label curves, analogy, neighbours, reason codes (python -m autorisk_tf.report)"
# Fine-tuning is the costly part: the demo's curves leave it out, one seed (the report's
# defaults: every label and label count, three seeds, about 100 steps of fine-tuning).
$PY -m autorisk_tf.report --data "$OUT/data" --model_dir "$OUT/pretrained" \
  --features "$OUT/features" --labels is_risk,takeover --seeds 1 --label_counts 100,all \
  --finetune_steps 0 --analogies "$OUT/raw/analogies.csv" --rings "$OUT/raw/rings.csv" \
  --classifier "$OUT/takeover" --planted "$OUT/raw/planted_events.csv" \
  --output "$OUT/report" 2>/dev/null
# The report's analogy and ring tables, one line each (the whole tables are in report.md).
$PY - "$OUT/report/report.md" <<'PY'
import sys
analogy, ring = {}, {}  # (embedding, factor) -> recall@10; embedding -> ring recall@20
for line in open(sys.argv[1], encoding="utf-8"):
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) == 4:
        analogy.setdefault((cells[0], cells[1]), cells[3])
    elif len(cells) == 2:
        ring.setdefault(cells[0], cells[1])
print("analogy recall@10:", ", ".join(f"{name} {analogy.get((name, 'all'))}" for name in
                                      ("encoder", "bag of event counts", "random neighbour")))
print("ring recall@20:", ", ".join(f"{name} {ring.get(name)}" for name in
                                   ("encoder", "encoder, plain cosine", "bag of event counts",
                                    "random vectors")))
PY

echo "== done in $((SECONDS / 60)) min $((SECONDS % 60)) s: outputs under $OUT/; open $OUT/report/index.html in a browser"
