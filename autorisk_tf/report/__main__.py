"""Writes an evaluation report of a pre-trained encoder as one HTML page.

  python -m autorisk_tf.report --data out/ --model_dir runs/x [--features feats/] \
      [--labels is_risk,takeover] [--analogies raw/analogies.csv] [--rings raw/rings.csv] \
      --output report/

Writes `report/index.html` (self-contained: images inlined, opens from disk), `report.md`
and the PNG files: the pre-training curves; UMAP and PCA maps of the test users per label,
with the AUC of logistic regression on the 2-D coordinates; few-label curves (LR on
embeddings, the encoder fine-tuned from its pre-trained weights and from scratch, GBDT on
hand-made features) with bands over seeds; sequence analogy recall on planted quadruples;
who else behaves like a planted fraud ring's member (ring recall, its nearest users);
nearest neighbours as event strips. Sections that need labels, features or analogies that
were not given are left out with a sentence saying so. UMAP and the figures need the
`report` extra (umap-learn, matplotlib).
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script)."""
    from autorisk_tf.few_labels import LABEL_COUNTS

    flags.DEFINE_string("data", None, "Output folder of beam.preprocess.")
    flags.DEFINE_string("model_dir", None, "Run folder of autorisk_tf.train (encoder.keras).")
    flags.DEFINE_string("output", None, "Folder for index.html, report.md and the PNG files.")
    flags.DEFINE_list("labels", [], "Binary label columns (none: sections that need labels "
                      "are left out).")
    flags.DEFINE_string("features", "", "Output folder of beam.features (the hand-made "
                        "GBDT curve).")
    flags.DEFINE_string("analogies", "", "analogies.csv of autorisk_tf.simulate "
                        "--num_analogies (the analogy section).")
    flags.DEFINE_string("rings", "", "rings.csv of autorisk_tf.simulate --num_rings (the "
                        "section on who else behaves like a ring member).")
    flags.DEFINE_string("classifier", "", "Output folder of autorisk_tf.finetune "
                        "(classifier.keras): the reason codes of its top-scored test users.")
    flags.DEFINE_string("planted", "", "planted_events.csv of autorisk_tf.simulate: the "
                        "planted takeover events, marked next to the reason codes.")
    flags.DEFINE_list("label_counts", list(LABEL_COUNTS), "Label counts of the few-label "
                      "curves (`all`: every labelled training user).")
    flags.DEFINE_integer("seeds", 3, "Seeds of the label draws and fine-tuning (bands).",
                         lower_bound=1)
    flags.DEFINE_integer("finetune_steps", 100, "About this many optimiser steps per "
                         "fine-tuning (at least one epoch); 0 leaves fine-tuning out.",
                         lower_bound=0)
    flags.DEFINE_list("finetune_labels", None, "Labels whose curves include fine-tuning "
                      "(default: every --labels; fine-tuning is the costly part).")
    flags.DEFINE_list("finetune_counts", None, "Label counts at which they are fine-tuned "
                      "(default: every --label_counts).")
    flags.DEFINE_integer("umap_neighbors", 15, "UMAP n_neighbors.", lower_bound=2)
    flags.DEFINE_float("umap_min_dist", 0.1, "UMAP min_dist.", lower_bound=0.0)
    flags.DEFINE_integer("map_users", 5000, "Most test users on the maps.", lower_bound=10)
    flags.DEFINE_integer("seed", 0, "Seed of the maps and of the users shown.")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    from autorisk_tf.data import fileio
    from autorisk_tf.report.build import Options, build_report

    missing = [name for name in ("data", "model_dir", "output") if not getattr(FLAGS, name)]
    if missing:
        sys.exit("error: " + ", ".join(f"--{name}" for name in missing) + " required")
    for count in FLAGS.label_counts:
        if count != "all" and not count.isdigit():
            sys.exit(f"error: --label_counts takes positive integers or `all`, not {count!r}")
    stray = set(FLAGS.finetune_counts or ()) - set(FLAGS.label_counts)
    if stray:
        sys.exit(f"error: --finetune_counts {sorted(stray)} must also be in --label_counts")
    fileio.split_patterns_or_exit(FLAGS.data, ("train", "test"))
    options = Options(labels=FLAGS.labels, features=FLAGS.features, analogies=FLAGS.analogies,
                      rings=FLAGS.rings, classifier=FLAGS.classifier, planted=FLAGS.planted,
                      label_counts=FLAGS.label_counts, seeds=FLAGS.seeds,
                      finetune_steps=FLAGS.finetune_steps,
                      finetune_labels=FLAGS.finetune_labels,
                      finetune_counts=FLAGS.finetune_counts, umap_neighbors=FLAGS.umap_neighbors,
                      umap_min_dist=FLAGS.umap_min_dist, map_users=FLAGS.map_users,
                      seed=FLAGS.seed)
    started = time.time()
    try:
        paths = build_report(FLAGS.data, FLAGS.model_dir, FLAGS.output, options)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"report written in {time.time() - started:.0f} s: {paths['html']} "
          f"(and {paths['markdown']})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
