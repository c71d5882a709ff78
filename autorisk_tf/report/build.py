"""Builds the evaluation report of one pre-trained encoder on one preprocessed data set.

Every figure and table comes from the shared functions: `autorisk_tf.evaluate` (AUCs, the
hand-made features, the bag-of-events baseline), `autorisk_tf.few_labels` (the label draws and
fine-tuning of the real-data benchmark), `autorisk_tf.neighbours` (nearest neighbours and
analogy) and `projection` (UMAP, PCA).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from autorisk_tf import evaluate, few_labels, neighbours
from autorisk_tf.data import fileio
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.report import figures, projection
from autorisk_tf.report.page import Image, Section, Table
from autorisk_tf.report.scalars import read_final_metrics, read_scalars


@dataclasses.dataclass
class Options:
    """What the report computes (the command's flags).

    Attributes:
        labels: Binary label columns (may be empty).
        features: `beam.features` output folder, or "" for none.
        analogies: `analogies.csv` of the simulator, or "" for none.
        rings: `rings.csv` of the simulator (planted fraud rings), or "" for none.
        classifier: `autorisk_tf.finetune` output folder (reason codes), or "" for none.
        planted: `planted_events.csv` of the simulator, or "" for none.
        label_counts: Label counts of the few-label curves.
        seeds: Seeds of the label draws and fine-tuning (the bands).
        finetune_steps: About this many optimiser steps per fine-tuning; 0 leaves the
            fine-tuned curves out.
        finetune_labels: The labels whose curves include fine-tuning (None: all).
        finetune_counts: The label counts at which they are fine-tuned (None: every one of
            `label_counts`).
        umap_neighbors: UMAP's n_neighbors.
        umap_min_dist: UMAP's min_dist.
        map_users: Most test users on the maps (a seeded sample beyond).
        seed: Seed of the maps and of the users shown.
    """

    labels: list[str] = dataclasses.field(default_factory=list)
    features: str = ""
    analogies: str = ""
    rings: str = ""
    classifier: str = ""
    planted: str = ""
    label_counts: list[str] = dataclasses.field(
        default_factory=lambda: list(few_labels.LABEL_COUNTS))
    seeds: int = 3
    finetune_steps: int = 100
    finetune_labels: list[str] | None = None
    finetune_counts: list[str] | None = None
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    map_users: int = 5000
    seed: int = 0


@dataclasses.dataclass
class Users:
    """Every user of the data set: key, split, embedding, labels and events.

    `part_widths` are the widths of the embedding's parts, in order (as a similar-user
    index with `part_cosine` weighs them).
    """

    keys: np.ndarray
    splits: np.ndarray
    x: np.ndarray
    labels: dict[str, np.ndarray]
    sequences: list[dict]
    part_widths: list[int]

    def rows(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        return np.flatnonzero(self.splits == split)


def load_users(data: str, schema, embedder) -> Users:
    """Embeds and reads every split of a preprocessed data set."""
    from autorisk_tf.contract import SPLITS
    from autorisk_tf.data import reader
    from autorisk_tf.data.fingerprint import embedding_parts
    from autorisk_tf.embed import embed

    keys, splits, xs, sequences = [], [], [], []
    labels = {label.name: [] for label in schema.labels}
    for split in SPLITS:
        try:
            pattern = fileio.split_pattern(data, split)
        except fileio.EmptySplitError:
            continue
        split_keys, x, split_labels = embed(embedder, pattern, schema)
        by_key = {s[seqex.KEY]: s for s in reader.read_sequences(pattern, schema)}
        keys.extend(split_keys)
        splits.extend([split] * len(split_keys))
        xs.append(x)
        sequences.extend(by_key[k] for k in split_keys)
        for name, values in split_labels.items():
            labels[name].extend(values)
    return Users(np.array(keys, dtype=object), np.array(splits), np.concatenate(xs),
                 {name: np.array(v) for name, v in labels.items()}, sequences,
                 [width for _, width in embedding_parts(embedder)])


def run_section(model_dir: str) -> Section:
    """The pre-training run: its configuration, curves and held-out accuracies."""
    section = Section("The pre-training run")
    config_path = os.path.join(model_dir, "config.json")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        section.blocks.append("Configuration: " + "; ".join(
            f"{name}: {json.dumps(value, sort_keys=True)}" for name, value in config.items()
            if name in ("model", "masked_event", "curriculum", "training")))
    scalars, final = read_scalars(model_dir), read_final_metrics(model_dir)
    if not scalars:
        section.blocks.append(f"{model_dir} holds no training logs (logs/), so there are no "
                              "curves: the encoder was not trained here, or its logs were "
                              "removed.")
    elif figures.matplotlib_available():
        steps = int(max(s[-1] for s, _ in scalars.values()))
        section.blocks.append(Image("training.png", figures.training_figure(scalars, final),
                                    f"Pre-training curves over {steps} steps."))
    rows = [[tag.split("/")[2], f"{final[tag]:.3f}",
             f"{final[tag.replace('/accuracy', '/majority')]:.3f}"]
            for tag in sorted(final) if tag.startswith("valid/mlm/") and tag.endswith(
                "/accuracy") and tag.replace("/accuracy", "/majority") in final]
    rows += [[f"{task} (in-batch)", f"{final[f'valid/{task}/accuracy']:.3f}",
              f"{final[f'valid/{task}/chance']:.3f} (chance)"]
             for task in ("qt", "slice") if f"valid/{task}/chance" in final]
    if rows:
        section.blocks.append("Held-out accuracy at the end of the run (valid split):")
        section.blocks.append(Table(["task / field", "accuracy", "majority class"], rows))
    return section


def _binary(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def map_section(users: Users, options: Options) -> Section:
    """UMAP and PCA maps of the test users' embeddings, one panel per label."""
    section = Section("Maps of the test users' embeddings")
    rows = users.rows("test")
    if len(rows) < 10:
        section.blocks.append(f"The test split holds {len(rows)} users: too few for a map.")
        return section
    if len(rows) > options.map_users:
        rows = np.sort(np.random.default_rng(options.seed).choice(rows, options.map_users,
                                                                  replace=False))
    x = users.x[rows]
    maps = {}
    if projection.umap_available():
        maps["UMAP"] = projection.umap_coordinates(x, options.seed, options.umap_neighbors,
                                                   options.umap_min_dist)
    else:
        section.blocks.append(projection.UMAP_MISSING)
    maps["PCA"] = projection.pca_coordinates(x, options.seed)
    umap_text = (f"UMAP: n_neighbors={options.umap_neighbors}, min_dist="
                 f"{options.umap_min_dist}, metric=cosine, random_state={options.seed}. "
                 if "UMAP" in maps else "")
    section.blocks.append(
        f"{len(rows)} test users. {umap_text}"
        "PCA: the first two components of the standardised embeddings. The AUC of logistic "
        "regression on the two map coordinates alone (5-fold) tells how much of a label the "
        "picture itself shows; compare it with the full-embedding AUC of the curves below.")
    labels = {name: users.labels[name][rows] for name in options.labels}
    aucs = {(name, label): projection.map_auc(xy, _binary(values))
            for name, xy in maps.items() for label, values in labels.items()}
    if labels:
        section.blocks.append(Table(["map"] + [f"{label}: AUC of LR on the 2 coordinates"
                                               for label in labels],
                                    [[name] + [f"{aucs[(name, label)]:.3f}" for label in labels]
                                     for name in maps]))
    else:
        section.blocks.append("No --labels were given, so the points are not coloured.")
        labels = {"(no labels)": np.full(len(rows), np.nan)}
    if figures.matplotlib_available():
        titles = {key: f"{key[0]}: {key[1]} (2-D LR AUC {auc:.3f})"
                  for key, auc in aucs.items()}
        section.blocks.append(Image("maps.png", figures.maps_figure(maps, labels, titles),
                                    f"{' and '.join(maps)} (left to right) of the test "
                                    "users."))
    return section


def curves_section(users: Users, data: str, schema, embedder, options: Options) -> Section:
    """Few-label curves: AUC against training labels for every method, bands over seeds."""
    section = Section("Few-label learning curves")
    if not options.labels:
        section.blocks.append("No --labels were given, so there are no learning curves.")
        return section
    seeds = list(range(options.seeds))
    feature_x = None
    if options.features:
        keys, values, _ = evaluate.load_features(options.features)
        row_of = {k: i for i, k in enumerate(keys)}
        feature_x = np.full((len(users.keys), values.shape[1]), np.nan)
        for i, key in enumerate(users.keys):
            if key in row_of:
                feature_x[i] = values[row_of[key]]
    else:
        section.blocks.append("No --features were given, so the hand-made GBDT curve is "
                              "left out (run beam.features to get one).")
    if not options.finetune_steps:
        section.blocks.append("--finetune_steps is 0, so the fine-tuned curves are left out.")
    else:
        if options.finetune_labels is not None:
            section.blocks.append("Fine-tuned curves (costly) only for: "
                                  f"{', '.join(options.finetune_labels) or 'none'} "
                                  "(--finetune_labels).")
        if options.finetune_counts is not None:
            section.blocks.append("Fine-tuned only at "
                                  f"{', '.join(options.finetune_counts) or 'no'} labels "
                                  "(--finetune_counts).")
    curves, table = {}, []
    for label in options.labels:
        curves[label] = label_curves(users, label, feature_x, data, schema, embedder, options)
        table += [[label, name, f"{p['labels']}" + (" (all)" if p["size"] == "all" else ""),
                   f"{p['mean']:.3f}", f"{p['min']:.3f}-{p['max']:.3f}"]
                  for name, points in curves[label].items() for p in points]
    section.blocks.append(
        f"Training labels are drawn from the train split (stratified, seeds "
        f"{seeds[0]}-{seeds[-1]}); AUC on all labelled test users, mean and range over "
        "seeds. Fine-tuning runs about "
        f"{options.finetune_steps} optimiser steps (at least one epoch).")
    section.blocks.append(Table(["label", "method", "training labels", "test AUC",
                                 "range over seeds"], table))
    if figures.matplotlib_available():
        section.blocks.append(Image("few_labels.png", figures.curves_figure(curves),
                                    "Test AUC against training labels; bands: range over "
                                    f"{len(seeds)} seeds."))
    return section


FINETUNED = ("pre-trained, fine-tuned", "from scratch")  # the fine-tuned methods' names


def label_curves(users: Users, label: str, feature_x: np.ndarray | None, data: str, schema,
                 embedder, options: Options) -> dict[str, list[dict]]:
    """The few-label curve of every method for one binary label.

    Args:
        users: Users. Every user (training rows are drawn from the train split, AUC on the
            labelled test users).
        label: str. Binary label column.
        feature_x: float [N, F] or None. Hand-made features of every user (NaN: none).
        data: str. Output folder of beam.preprocess (for fine-tuning).
        schema: Schema. Its schema.
        embedder: SequenceEmbedder. The pre-trained embedder.
        options: Options. Label counts, seeds and fine-tuning steps.

    Returns:
        `{method: few_labels.curve points}`.
    """
    y = _binary(users.labels[label])
    train, test = users.rows("train"), users.rows("test")
    pool, scored = train[~np.isnan(y[train])], test[~np.isnan(y[test])]

    def fitted(make_model, x):
        return lambda rows, seed: evaluate.fitted_auc(
            lambda: make_model(seed), x[rows], y[rows], x[scored], y[scored])

    def finetuned(runner: few_labels.Finetuner, pretrained: bool):
        return lambda rows, seed: runner.auc(pretrained, users.keys[rows], few_labels.
                                             finetune_epochs(len(rows), options.finetune_steps,
                                                             low=1), seed)

    methods = {"LR on embeddings": fitted(lambda seed: evaluate.logistic_regression(),
                                          users.x)}
    if feature_x is not None:
        methods["GBDT on hand-made features"] = fitted(evaluate.gbdt, feature_x)
    if options.finetune_steps and label in (options.finetune_labels or [label]):
        runner = few_labels.Finetuner(embedder, data, schema, label, users.keys[scored])
        methods[FINETUNED[0]] = finetuned(runner, True)
        methods[FINETUNED[1]] = finetuned(runner, False)
    sizes = few_labels.usable_sizes(options.label_counts, len(pool))
    tuned = sizes if options.finetune_counts is None else few_labels.usable_sizes(
        [c for c in options.label_counts if c in options.finetune_counts], len(pool))
    return {name: few_labels.curve(run, pool, y, tuned if name in FINETUNED else sizes,
                                   range(options.seeds))
            for name, run in methods.items()}


def read_analogies(path: str) -> list[dict]:
    """Rows of the simulator's `analogies.csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _strip_fields(schema, *names: str) -> list:
    """The first categorical field, then the named fields, without repeats."""
    first = [f for f in schema.fields if f.kind == "categorical"][:1]
    named = [f for name in names for f in schema.fields if f.name == name]
    return list({f.name: f for f in first + named}.values())


def analogy_section(users: Users, schema, options: Options, colours: dict) -> Section:
    """Recall of planted analogies: encoder against bag-of-events counts and random."""
    section = Section("Sequence analogy")
    if not options.analogies:
        section.blocks.append("No --analogies file was given, so there is no analogy test "
                              "(the simulator writes one with --num_analogies).")
        return section
    quadruples = read_analogies(options.analogies)
    _, bag = evaluate.bag_of_events(users.sequences, schema)
    results = {"encoder": neighbours.analogy_ranks(users.keys, users.x, quadruples),
               "bag of event counts": neighbours.analogy_ranks(users.keys, bag, quadruples)}
    found = len(results["encoder"])
    if not found:
        section.blocks.append(f"None of the {len(quadruples)} quadruples of "
                              f"{options.analogies} has all four users in this data set.")
        return section
    section.blocks.append(
        f"For each of {found} planted quadruples (a, b, c, d) (the same behaviour with one "
        "factor swapped: a and c share the factor value x, b and d the value y), the query "
        "emb(a) - emb(b) + emb(d) ranks all other users by cosine, a, b and d excluded. "
        f"Recall@k: the share of quadruples whose c is among the k nearest of "
        f"{len(users.keys) - 3} candidates.")
    factors = sorted({q["factor"] for q in results["encoder"]})
    rows = []
    for method, ranked in results.items():
        rows.append([method, "all"] + [f"{neighbours.recall_at([r['rank'] for r in ranked], k):.3f}"
                                       for k in (1, 10)])
        for factor in factors:
            ranks = [r["rank"] for r in ranked if r["factor"] == factor]
            rows.append([method, factor] + [f"{neighbours.recall_at(ranks, k):.3f}"
                                            for k in (1, 10)])
    rows.append(["random neighbour", "all"] + [
        f"{neighbours.random_recall_at(len(users.keys), k):.4f}" for k in (1, 10)])
    section.blocks.append(Table(["embedding", "factor", "recall@1", "recall@10"], rows))
    if figures.matplotlib_available():
        index = {k: i for i, k in enumerate(users.keys)}
        for factor in factors:
            example = next(r for r in results["encoder"] if r["factor"] == factor)
            shown = [(f"a {example['a']} ({example['x']})", example["a"]),
                     (f"b {example['b']} ({example['y']})", example["b"]),
                     (f"d {example['d']} ({example['y']})", example["d"]),
                     (f"c {example['c']} ({example['x']}): wanted", example["c"]),
                     (f"nearest to a - b + d: {example['top']}", example["top"])]
            fields = _strip_fields(schema, example.get("field", ""))
            section.blocks.append(Image(
                f"analogy_{factor}.png",
                figures.strips_figure([(t, users.sequences[index[k]]) for t, k in shown],
                                      fields, colours, title=f"factor {factor}: c ranks "
                                      f"{example['rank']}"),
                f"Analogy example, factor {factor} ({example['x']} / {example['y']}): c is "
                f"rank {example['rank']} of {len(users.keys) - 3}."))
    return section


RING_K = 20
REASON_USERS = 5  # the top-scored test users whose reason codes the report shows


def ring_section(users: Users, schema, options: Options, colours: dict) -> Section:
    """Who else behaves like a planted ring member: ring recall and one member's nearest."""
    import csv

    section = Section("Who else behaves like this")
    if not options.rings:
        section.blocks.append("No --rings file was given, so there is no ring search (the "
                              "simulator plants rings with --num_rings).")
        return section
    with open(options.rings, encoding="utf-8", newline="") as f:
        rings = {row["user_id"]: row["ring"] for row in csv.DictReader(f)}
    index = {k: i for i, k in enumerate(users.keys)}
    members = [key for key in rings if key in index]
    if not members:
        section.blocks.append(f"None of the ring members of {options.rings} is in this "
                              "data set.")
        return section
    _, bag = evaluate.bag_of_events(users.sequences, schema)
    random = np.random.default_rng(options.seed).normal(size=users.x.shape)
    balanced = neighbours.balance_parts(users.x, users.part_widths)
    section.blocks.append(
        f"{len(set(rings[m] for m in members))} planted rings ({len(members)} accounts run "
        "from one script each, on top of their own activity). Ring recall: from each member, "
        f"the share of its ring among its {RING_K} nearest users (cosine, every split). "
        "`encoder`: every part of the embedding weighs alike, as the similar-user index "
        "compares them (`part_cosine`); `encoder, plain cosine`: the whole vector.")
    section.blocks.append(Table(["embedding", f"ring recall@{RING_K}"], [
        [name, f"{neighbours.ring_recall(x, list(users.keys), rings, RING_K):.3f}"]
        for name, x in (("encoder", balanced), ("encoder, plain cosine", users.x),
                        ("bag of event counts", bag), ("random vectors", random))]))
    if figures.matplotlib_available():
        query = members[0]
        found, sims = neighbours.nearest(balanced, balanced[[index[query]]], 5,
                                         exclude=[[index[query]]])
        described = [(f"{query} (query, ring {rings[query]})",
                      users.sequences[index[query]])]
        described += [(f"{users.keys[i]} cos {s:.2f}" + (
            " (same ring)" if rings.get(users.keys[i]) == rings[query] else ""),
            users.sequences[i]) for i, s in zip(found[0], sims[0], strict=True)]
        same = sum(rings.get(users.keys[i]) == rings[query] for i in found[0])
        section.blocks.append(Image(
            "ring.png", figures.strips_figure(described, _strip_fields(schema, "item"),
                                              colours),
            f"Ring member {query} and its 5 nearest users: {same} of its ring."))
    return section


def reasons_section(users: Users, data: str, schema, options: Options,
                    colours: dict) -> Section:
    """The top-scored test users of a classifier and the events that made their scores."""
    from autorisk_tf import explain

    section = Section("Reason codes")
    if not options.classifier:
        section.blocks.append("No --classifier was given (an autorisk_tf.finetune output "
                              "folder), so there are no reason codes.")
        return section
    classifier = explain.load_classifier(options.classifier)
    pattern = fileio.split_pattern(data, "test")
    scores = explain.scores(classifier, pattern, schema)
    top = sorted(scores, key=scores.get, reverse=True)[:REASON_USERS]
    rows, summary = explain.explain_split(classifier, pattern, schema, top_k=3, full=True,
                                          keys=set(top))
    rows.sort(key=lambda row: -row["score"])
    planted = explain.read_planted(options.planted) if options.planted else {}
    section.blocks.append(
        f"The {len(rows)} test users that the classifier of {options.classifier} scores "
        "highest, and each event's share of the score (integrated gradients against every "
        "event masked, `autorisk_tf.explain`; the shares add up to the score minus the "
        f"baseline's within {summary['max_completeness_error']:.2%})."
        + (" `*`: an event of a planted takeover." if planted else ""))
    index = {k: i for i, k in enumerate(users.keys)}

    def described(event, key):
        mark = "*" if event["timestamp_ms"] in planted.get(key, set()) else ""
        return f"{mark}{event['values'][schema.fields[0].name]} {event['attribution']:+.3f}"

    section.blocks.append(Table(["user", "score", "baseline", "top 3 events"], [
        [row["key"], f"{row['score']:.3f}", f"{row['baseline_score']:.3f}",
         ", ".join(described(e, row["key"]) for e in row["top_events"])] for row in rows]))
    if figures.matplotlib_available():
        examples = [users.sequences[index[row["key"]]] for row in rows]
        marked = [{i for i, t in enumerate(ex[seqex.TIMESTAMP]) if t in planted.get(
            row["key"], set())} for row, ex in zip(rows, examples, strict=True)]
        section.blocks.append(Image(
            "reasons.png", figures.strips_figure(
                [(f"{row['key']} score {row['score']:.2f}", ex) for row, ex in
                 zip(rows, examples, strict=True)], _strip_fields(schema, "item"), colours,
                attributions=[np.asarray(row["attribution"]) for row in rows],
                marked=marked if planted else None),
            "Event strips with each event's attribution (bottom band)"
            + ("; dots: the planted takeover events." if planted else ".")))
    return section


def neighbour_section(users: Users, schema, options: Options, colours: dict) -> Section:
    """Five test users and their five nearest users; k-NN label agreement against chance."""
    section = Section("Nearest neighbours")
    test = users.rows("test")
    if options.labels:
        rows = []
        for label in options.labels:
            y = _binary(users.labels[label])
            agreement, chance = neighbours.knn_label_agreement(users.x, y, k=10)
            rows.append([label, f"{agreement:.3f}", f"{chance:.3f}"])
        section.blocks.append("Share of each user's 10 nearest users (cosine, all splits) "
                              "with the same label, against the share random neighbours "
                              "would have:")
        section.blocks.append(Table(["label", "10-NN agreement", "chance"], rows))
    else:
        section.blocks.append("No --labels were given, so there is no label agreement.")
    if not len(test) or not figures.matplotlib_available():
        return section
    chosen = np.random.default_rng(options.seed).choice(test, min(5, len(test)), replace=False)
    index, similarity = neighbours.nearest(users.x, users.x[chosen], 5,
                                           exclude=[[i] for i in chosen])
    numeric = [f.name for f in schema.fields if f.kind == "numeric"][:1]
    fields = _strip_fields(schema, *numeric)
    for n, (query, found, sims) in enumerate(zip(chosen, index, similarity, strict=True)):
        described = [(f"{users.keys[query]} (query){_label_text(users, query, options)}",
                      users.sequences[query])]
        described += [(f"{users.keys[i]} cos {s:.2f}{_label_text(users, i, options)}",
                       users.sequences[i]) for i, s in zip(found, sims, strict=True)]
        section.blocks.append(Image(
            f"neighbours_{n}.png", figures.strips_figure(described, fields, colours),
            f"Test user {users.keys[query]} and its 5 nearest users."))
    return section


def _label_text(users: Users, row: int, options: Options) -> str:
    parts = [f"{label}={users.labels[label][row]:.0f}" for label in options.labels
             if not np.isnan(_binary(users.labels[label][row:row + 1]))[0]]
    return f" [{', '.join(parts)}]" if parts else ""


def build_report(data: str, model_dir: str, output_dir: str, options: Options) -> dict:
    """Computes every section and writes the report.

    Args:
        data: str. Output folder of beam.preprocess.
        model_dir: str. Run folder of autorisk_tf.train (holding `encoder.keras`).
        output_dir: str. Folder for `index.html`, `report.md` and the PNG files.
        options: Options. What to compute.

    Returns:
        `{"html": path, "markdown": path}`.

    Raises:
        ValueError: a label that is not a binary label of the schema.
        FileNotFoundError: no encoder, features, analogies or rings where named.
    """
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import load_embedder
    from autorisk_tf.report import page

    schema = Artifacts.load(fileio.join(data, "artifacts")).schema
    evaluate.check_binary_labels(schema, options.labels)
    stray = set(options.finetune_labels or ()) - set(options.labels)
    if stray:
        raise ValueError(f"--finetune_labels {sorted(stray)} must also be in --labels")
    for path in (options.features, options.analogies, options.rings, options.classifier,
                 options.planted):
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found")
    embedder = load_embedder(model_dir)
    users = load_users(data, schema, embedder)
    colours = ({f.name: figures.field_colours(users.sequences, f) for f in schema.fields}
               if figures.matplotlib_available() else {})
    sections = [] if figures.matplotlib_available() else [
        Section("Figures", [figures.MATPLOTLIB_MISSING])]
    sections += [run_section(model_dir), map_section(users, options),
                 curves_section(users, data, schema, embedder, options),
                 analogy_section(users, schema, options, colours),
                 ring_section(users, schema, options, colours),
                 reasons_section(users, data, schema, options, colours),
                 neighbour_section(users, schema, options, colours)]
    title = (f"AutoRisk-TF report: {os.path.basename(os.path.normpath(model_dir))} on "
             f"{os.path.basename(os.path.normpath(data))} ({len(users.keys)} users)")
    return page.write(output_dir, title, sections)
