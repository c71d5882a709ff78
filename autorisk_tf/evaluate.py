"""Downstream evaluation: logistic regression on embeddings, baselines, cross-validated AUC.

  python -m autorisk_tf.evaluate --data out/ --model_dir runs/x --model_dir runs/random \
      [--labels is_risk,takeover] [--json report.json]

The command: for each model folder (holding `encoder.keras`) and each binary label, embed
the train and test splits, fit a standardised logistic regression on train, report test AUC
as a Markdown table. The functions below it are shared with `benchmarks/real_data_bench.py`:
5-fold stratified cross-validation with out-of-fold scores, a bootstrap interval of an AUC
lift, the hand-made feature table of `beam.features`, and the bag-of-items and SVD baselines.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags

from autorisk_tf.data import fileio, output_folder
from autorisk_tf.data import sequence_example as seqex

FLAGS = flags.FLAGS


def logistic_regression(c: float = 0.1, standardise: bool = True):
    """A logistic regression (optionally after standard scaling), as a scikit-learn model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=c, max_iter=3000)
    return make_pipeline(StandardScaler(), model) if standardise else model


def imputed_lr(c: float = 0.1):
    """Median imputation of NaNs, standard scaling and a logistic regression (C `c`).

    The LR of a hand-made pool with missing values (a variable never measured).
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                         StandardScaler(), LogisticRegression(C=c, max_iter=3000))


# The inverse regularisation strengths `tuned_logistic_regression` chooses among.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def tuned_logistic_regression(standardise: bool = True, cs: Sequence[float] = C_GRID,
                              folds: int = 5):
    """A logistic regression whose C is chosen by cross-validated AUC on its training rows.

    Nested inside an outer cross-validation, the choice never sees the outer test fold.
    scikit-learn's `LogisticRegressionCV` fits each inner fold along the whole C path
    (warm-started), several times faster than a grid search; the scaler is fitted on the
    training rows before the inner folds (it uses no labels).

    Args:
        standardise: bool. Standard-scale the features first. Defaults to True.
        cs: sequence of float. Candidate C values. Defaults to `C_GRID`.
        folds: int. Inner stratified folds (shuffled, `random_state=0`). Defaults to 5.

    Returns:
        A scikit-learn classifier (refitted on all its training rows with the best C).
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegressionCV(Cs=list(cs), l1_ratios=(0.0,), scoring="roc_auc",
                                 cv=StratifiedKFold(folds, shuffle=True, random_state=0),
                                 max_iter=3000, use_legacy_attributes=False)
    return make_pipeline(StandardScaler(), model) if standardise else model


def gbdt(seed: int = 0):
    """The GBDT of the hand-made feature pool: scikit-learn's histogram gradient boosting.

    Missing values (NaN) are handled natively; early stopping on 10% of the training rows.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=500, max_leaf_nodes=15,
                                          min_samples_leaf=40, l2_regularization=1.0,
                                          early_stopping=True, validation_fraction=0.1,
                                          n_iter_no_change=30, random_state=seed)


class CompactGBDT:
    """The hand-made GBDT with another block of columns joined compactly, as a classifier.

    The input's first `num_features` columns are the hand-made features, the rest the block
    (embeddings, a bag of items). Fitting adds the block's first `components` principal
    components (none at 0) and, with `lr_score`, an LR's score on the block (C 0.1,
    out-of-fold over 5 inner folds on the training rows; the LR refitted on all of them
    scores new rows; `standardise` as `logistic_regression`).
    """

    def __init__(self, num_features: int, components: int = 16, lr_score: bool = False,
                 standardise: bool = True, seed: int = 0):
        self.num_features, self.components = num_features, components
        self.lr_score, self.standardise, self.seed = lr_score, standardise, seed

    def _columns(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        from sklearn.decomposition import PCA
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        features, block = x[:, :self.num_features], x[:, self.num_features:]
        parts = [features]
        if self.components:
            if y is not None:
                self.pca_ = PCA(self.components, random_state=self.seed).fit(block)
            parts.append(self.pca_.transform(block))
        if self.lr_score:
            def make_lr():
                return logistic_regression(0.1, standardise=self.standardise)

            if y is not None:
                folds = StratifiedKFold(5, shuffle=True, random_state=self.seed + 1)
                score = cross_val_predict(make_lr(), block, y, cv=folds,
                                          method="predict_proba")[:, 1]
                self.lr_ = make_lr().fit(block, y)
            else:
                score = self.lr_.predict_proba(block)[:, 1]
            parts.append(score[:, None])
        return np.concatenate(parts, axis=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> CompactGBDT:
        """Fits the block's components and LR (out of fold, then on all rows) and the GBDT.

        Args:
            x: float [N, F + B]. Hand-made features, then the block.
            y: int [N]. Binary labels.

        Returns:
            The fitted model.
        """
        self.gbdt_ = gbdt(self.seed).fit(self._columns(x, y), y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities [N, 2] of new rows (hand-made features, then the block)."""
        return self.gbdt_.predict_proba(self._columns(x))


def lr_auc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
           test_y: np.ndarray) -> float:
    """Test AUC of a standardised logistic regression fitted on the training rows.

    Args:
        train_x: float [N, E]. Training embeddings.
        train_y: [N]. Binary training labels (NaN rows are dropped).
        test_x: float [M, E]. Test embeddings.
        test_y: [M]. Binary test labels (NaN rows are dropped).

    Returns:
        The test ROC AUC.
    """
    keep_train, keep_test = ~np.isnan(train_y), ~np.isnan(test_y)
    return fitted_auc(lambda: logistic_regression(0.1), train_x[keep_train],
                      train_y[keep_train].astype(int), test_x[keep_test],
                      test_y[keep_test].astype(int))


def fitted_auc(make_model: Callable, train_x: np.ndarray, train_y: np.ndarray,
               test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test AUC of a scikit-learn classifier fitted on the training rows."""
    from sklearn.metrics import roc_auc_score

    model = make_model().fit(train_x, train_y)
    return float(roc_auc_score(test_y, model.predict_proba(test_x)[:, 1]))


def fold_index(y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each row's fold in a shuffled stratified k-fold split (scikit-learn's).

    Args:
        y: int array [N]. Binary labels.
        folds: int. Folds. Defaults to 5.
        seed: int. `random_state` of the shuffled folds. Defaults to 0.

    Returns:
        int [N]: each row's test fold, 0 to folds - 1.
    """
    from sklearn.model_selection import StratifiedKFold

    index = np.zeros(len(y), dtype=int)
    for fold, (_, test) in enumerate(StratifiedKFold(folds, shuffle=True,
                                                     random_state=seed).split(np.zeros(len(y)), y)):
        index[test] = fold
    return index


def cv_splits(y: np.ndarray, folds: int = 5, seed: int = 0):
    """The rows of each fold of `fold_index`'s split, in fold order.

    Args:
        y: int array [N]. Binary labels.
        folds: int. Folds. Defaults to 5.
        seed: int. `random_state` of the shuffled folds. Defaults to 0.

    Yields:
        `(train, test)`: int arrays of row indices, the other folds' and the fold's own.
    """
    fold_of = fold_index(y, folds, seed)
    for fold in range(folds):
        yield np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)


def cv_auc(x, y: np.ndarray, make_model: Callable, folds: int = 5, seed: int = 0,
           ) -> tuple[list[float], np.ndarray]:
    """Stratified k-fold AUC of a model, with its out-of-fold scores.

    Args:
        x: array [N, F] (dense or scipy sparse). Features.
        y: int array [N]. Binary labels.
        make_model: callable. Returns a fresh scikit-learn classifier.
        folds: int. Folds. Defaults to 5.
        seed: int. `random_state` of the shuffled folds. Defaults to 0.

    Returns:
        `(fold_aucs, scores)`: the AUC of each fold and every row's out-of-fold score.
    """
    from sklearn.metrics import roc_auc_score

    scores = np.zeros(len(y), dtype=np.float64)
    aucs = []
    for train, test in cv_splits(y, folds, seed):
        model = make_model().fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
        aucs.append(float(roc_auc_score(y[test], scores[test])))
    return aucs, scores


def bootstrap_auc_lift(y: np.ndarray, base: np.ndarray, new: np.ndarray, rounds: int = 1000,
                       seed: int = 0) -> tuple[float, float, float]:
    """AUC(new) - AUC(base) on the same rows, with a bootstrap 95% interval.

    Args:
        y: int array [N]. Binary labels.
        base: float [N]. Scores of the baseline (such as out-of-fold scores).
        new: float [N]. Scores of the contender on the same rows.
        rounds: int. Bootstrap resamples of the rows. Defaults to 1000.
        seed: int. Seed of the resampling.

    Returns:
        `(lift, low, high)`: the lift on all rows and the 2.5% and 97.5% percentiles.
    """
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    lifts = []
    while len(lifts) < rounds:
        rows = rng.integers(0, len(y), len(y))
        if y[rows].min() == y[rows].max():
            continue
        lifts.append(roc_auc_score(y[rows], new[rows]) - roc_auc_score(y[rows], base[rows]))
    lift = float(roc_auc_score(y, new) - roc_auc_score(y, base))
    return lift, float(np.percentile(lifts, 2.5)), float(np.percentile(lifts, 97.5))


def load_features(folder: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads the Parquet feature table that `beam.features` wrote.

    Args:
        folder: str. The job's `--output_dir`.

    Returns:
        `(keys, features, columns)`: keys [N] str sorted, float64 [N, F] and the F names.

    Raises:
        OutputFolderError: the folder has no manifest or its tables are not the listed ones.
        FileNotFoundError: no `features-*.parquet` in the folder.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [p for p in output_folder.listed_files(folder, "", ".parquet")
             if os.path.basename(p).startswith("features")]
    if not paths:
        raise FileNotFoundError(f"no features*.parquet in {folder}: run beam.features first")
    table = pa.concat_tables([pq.read_table(p) for p in paths]).sort_by("key")
    columns = [c for c in table.column_names if c != "key"]
    values = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                       for c in columns], axis=1) if columns else np.zeros((table.num_rows, 0))
    return np.array(table.column("key").to_pylist(), dtype=object), values, columns


def bag_of_items(keys: Sequence[str], event_keys: Sequence[str], items: Sequence[str],
                 binary: bool = True):
    """User x item matrix: 1 where the user has at least one event with the item.

    Args:
        keys: sequence of str. Users, in row order.
        event_keys: sequence of str. The user of each event.
        items: sequence of str. The item of each event (empty items are skipped).
        binary: bool. False: count the events of each item instead.

    Returns:
        `(matrix, vocabulary)`: scipy CSR float32 [len(keys), V] and the V items in column
        order (first seen first). Events of users not in `keys` are ignored.
    """
    import scipy.sparse as sp

    row_of = {key: i for i, key in enumerate(keys)}
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for key, item in zip(event_keys, items, strict=True):
        row = row_of.get(key)
        if row is None or not item:
            continue
        rows.append(row)
        cols.append(vocabulary.setdefault(item, len(vocabulary)))
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                           shape=(len(keys), len(vocabulary)))
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix, list(vocabulary)


def bag_of_events(sequences: Sequence[dict], schema) -> tuple[np.ndarray, list[str]]:
    """Counts of every field value over each user's events: the bag-of-events baseline.

    A categorical or text value counts as `field=value`; a numeric value as its decile among
    all the given events (`field#decile`).

    Args:
        sequences: sequence of dict. Examples as `reader.read_sequences` yields them.
        schema: Schema. Their schema.

    Returns:
        `(keys, matrix)`: keys [N] str and scipy CSR float32 counts [N, V].
    """
    keys = np.array([s[seqex.KEY] for s in sequences], dtype=object)
    event_keys, tokens = [], []
    for field in schema.fields:
        name = seqex.field_feature(field.name)
        if field.kind == "numeric":
            values = np.concatenate([s[name] for s in sequences]).astype(np.float64)
            edges = np.nanquantile(values, np.linspace(0.1, 0.9, 9)) if np.isfinite(
                values).any() else np.zeros(0)
        for s in sequences:
            if field.kind == "numeric":
                present = np.isfinite(s[name])
                column = [f"{field.name}#{d}" for d in np.searchsorted(
                    edges, s[name][present], side="right")]
            else:
                column = [f"{field.name}={v}" for v in s[name] if v != ""]
            event_keys.extend([s[seqex.KEY]] * len(column))
            tokens.extend(column)
    return keys, bag_of_items(keys, event_keys, tokens, binary=False)[0]


def svd_features(bag, dim: int = 32, seed: int = 0) -> np.ndarray:
    """TruncatedSVD of the L2-normalised rows of a bag of items: [N, dim] dense."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    return TruncatedSVD(dim, random_state=seed).fit_transform(normalize(bag))


def check_binary_labels(schema, labels: Sequence[str]) -> None:
    """Raises ValueError naming the binary labels when one of `labels` is not one."""
    kinds = {label.name: label.kind for label in schema.labels}
    for label in labels:
        if kinds.get(label) != "binary":
            raise ValueError(f"label {label!r} is not a binary label of the schema "
                             f"({sorted(k for k, v in kinds.items() if v == 'binary')})")


def downstream_table(data: str, model_dirs: list[str], labels: list[str]) -> dict:
    """LR test AUC of every (model folder, label) pair.

    Args:
        data: str. Output folder of beam.preprocess.
        model_dirs: list of str. Folders holding `encoder.keras`.
        labels: list of str. Binary label columns.

    Returns:
        `{model_dir: {label: auc}}`.
    """
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import embed, load_embedder

    schema = Artifacts.load(fileio.join(data, "artifacts")).schema
    check_binary_labels(schema, labels)
    report = {}
    for model_dir in model_dirs:
        embedder = load_embedder(model_dir)
        _, train_x, train_labels = embed(embedder, fileio.join(data, "train", "*.tfrecord"),
                                         schema)
        _, test_x, test_labels = embed(embedder, fileio.join(data, "test", "*.tfrecord"),
                                       schema)
        for label in labels:
            for split, values in (("train", train_labels[label]), ("test", test_labels[label])):
                seen = set(np.unique(values[~np.isnan(values.astype(float))]).tolist())
                if len(seen) < 2:
                    raise ValueError(f"label {label!r}: the {split} split of {data} has "
                                     f"{'no labelled user' if not seen else 'one class only'}"
                                     f"; an AUC needs users of both classes")
        report[model_dir] = {label: lr_auc(train_x, train_labels[label].astype(float),
                                           test_x, test_labels[label].astype(float))
                             for label in labels}
    return report


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("data", None, "Output folder of beam.preprocess.")
    flags.DEFINE_multi_string("model_dir", [], "Folder holding encoder.keras (repeatable).")
    flags.DEFINE_list("labels", ["is_risk"], "Binary label columns.")
    flags.DEFINE_string("json", None, "Also write the report here.")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    if not FLAGS.data or not FLAGS.model_dir:
        sys.exit("error: --data and at least one --model_dir are required")
    fileio.split_patterns_or_exit(FLAGS.data, ("train", "test"))
    try:
        report = downstream_table(FLAGS.data, FLAGS.model_dir, FLAGS.labels)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print("| embeddings from | " + " | ".join(f"{label} AUC" for label in FLAGS.labels) + " |")
    print("|---|" + "---:|" * len(FLAGS.labels))
    for model_dir, aucs in report.items():
        cells = " | ".join(f"{aucs[label]:.3f}" for label in FLAGS.labels)
        print(f"| {os.path.basename(os.path.normpath(model_dir))} | {cells} |")
    if FLAGS.json:
        fileio.write_text(FLAGS.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
