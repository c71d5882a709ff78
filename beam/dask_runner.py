"""Beam's DaskRunner, completed for these jobs: `--runner DaskRunner` on a Dask cluster.

Beam 2.77's `apache_beam.runners.dask.dask_runner.DaskRunner` translates a pipeline into
Dask bags, but five gaps keep it from running `beam.preprocess`, `beam.features` or
`beam.embed` (each read in its source, and each fails those jobs):

- a multi-output ParDo's outputs all land in one bag, so a consumer of one tag (the dead
  letters, the summaries) also gets every other tag's elements;
- a side input is a bag that each task computes again inside itself, so a sink's
  `InitializeWrite` (a temporary folder with a random name) differs between the tasks that
  write and the one that finalizes;
- only the last transform's bag is computed: the other sinks of a job never run;
- outputs a DoFn emits in `finish_bundle` are dropped;
- GroupByKey shuffles through each worker's own temporary files (Dask's single-machine
  default when the graph is built before the client connects), so groups are split.

This runner keeps Beam's translation of Create, Flatten and Reshuffle and replaces the
rest: each ParDo output is a bag of its own (filtered by tag from the
ParDo's), each side input is computed once in the graph and handed to the tasks that read
it, every output no transform consumes is computed, and a bundle's outputs are gathered
after `finish_bundle`. Everything runs in one `Client.compute`, so a bag read by several
transforms is computed once.

The jobs take `--runner DaskRunner` (`beam.runners.runner_args` names this class) with
`--dask_client_address ADDR` (a scheduler, local or on other hosts) or, with none,
`--dask_workers N` worker processes on this machine (`beam.runners.dask_cluster`).
"""

from __future__ import annotations

import logging
import typing as t

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import overrides, transform_evaluator
from apache_beam.transforms.sideinputs import SideInputMap


def _select(bag, tag):
    """The elements of one output tag from a ParDo's `(tag, value)` bag."""
    return bag.filter(lambda pair: pair[0] == tag).map(lambda pair: pair[1])


def _whole(bag):
    """A bag as one Dask value (its list of elements), computed once in the graph."""
    import dask

    # not optimised: an optimised copy would compute the bag's tasks again, under new names
    parts = bag.to_delayed(optimize_graph=False)
    return dask.delayed(lambda parts: [x for part in parts for x in part])(parts)


def _group_by_key(bag):
    """Beam's GroupByKey on `(key, windowed value)` pairs, shuffled between the workers.

    Beam's translation leaves the shuffle to Dask's default, which is chosen when the
    graph is built, before the client connects: the single-machine disk shuffle, whose
    partitions each worker keeps in its own temporary files (groups are lost across
    workers). The task shuffle moves them through the scheduler.
    """
    return bag.groupby(lambda pair: pair[0], shuffle="tasks").map(
        lambda group: (group[0], [transform_evaluator.defenestrate(pair[1])
                                  for pair in group[1]]))


def _run_bundle(items, transform, window_fn, label, sides, *side_values):
    """Runs a ParDo over one partition; returns its outputs as `(tag, value)` pairs."""
    from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler

    receivers = transform_evaluator.OneReceiver()
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None],
                             tagged_receivers=receivers, per_element_output_counter=None,
                             output_batch_converter=None, process_yields_batches=False,
                             process_batch_yields_elements=False)
    side_inputs = [
        SideInputMap(view, options,
                     [transform_evaluator.get_windowed_value(v, window_fn) for v in values])
        for (view, options), values in zip(sides, side_values, strict=True)]
    args, kwargs = transform.raw_side_inputs
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(transform.fn), handler, context=DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=list(args), input_kwargs=kwargs,
        user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(transform_evaluator.get_windowed_value(item, window_fn))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    out = []
    for value in receivers.values:
        if isinstance(value, beam.pvalue.TaggedOutput):
            out.append((value.tag, value.value.value))
        else:
            out.append((None, value.value))
    return out


class DaskRunner(beam_dask.DaskRunner):
    """Runs a pipeline on a Dask cluster (see the module docstring for what it adds)."""

    def run_pipeline(self, pipeline, options):
        import dask.bag as db
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        # Beam warns at every Create that its default partition size changed (1 to 128)
        logging.getLogger(transform_evaluator.__name__).setLevel(logging.ERROR)
        pipeline.replace_all(overrides.dask_overrides())
        visitor = _BagVisitor(bag_kwargs)
        pipeline.visit(visitor)
        # One collection of every unconsumed output, each partition reduced to its count:
        # one graph, so a bag read in several places is computed once, and no data comes
        # back to this process.
        done = db.concat([bag.map_partitions(lambda part: [len(list(part))])
                          for pcoll, bag in visitor.bags.items()
                          if pcoll not in visitor.consumed])
        client = ddist.Client(**dask_options)
        return _Result(client, [client.compute(done)])


class _Result(beam_dask.DaskRunnerResult):
    """Waits for every output, raises a worker's error here, then closes the client."""

    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()


class _BagVisitor(beam.pipeline.PipelineVisitor):
    """Builds one Dask bag per PCollection of the pipeline."""

    def __init__(self, bag_kwargs: dict):
        self.bag_kwargs = bag_kwargs
        self.bags: dict[pvalue.PCollection, t.Any] = {}
        self.consumed: set[pvalue.PCollection] = set()

    def visit_transform(self, node) -> None:
        inputs = [self.bags.get(p) for p in node.inputs if not isinstance(p, pvalue.PBegin)]
        self.consumed.update(p for p in node.inputs if not isinstance(p, pvalue.PBegin))
        self.consumed.update(si.pvalue for si in node.side_inputs)
        transform = node.transform
        if transform.__class__ is beam.ParDo:
            bag = self._par_do(node, inputs[0])
            self.bags.update({p: _select(bag, p.tag) for p in node.outputs.values()})
            return
        if transform.__class__ is overrides._GroupByKeyOnly:
            bag = _group_by_key(inputs[0])
        else:
            op = transform_evaluator.TRANSLATIONS.get(transform.__class__,
                                                      transform_evaluator.NoOp)(
                node, bag_kwargs=self.bag_kwargs)
            flatten = isinstance(op, transform_evaluator.Flatten)
            bag = op.apply(inputs if flatten else inputs[0] if inputs else None)
        self.bags.update(dict.fromkeys(node.outputs.values(), bag))

    def _par_do(self, node, input_bag):
        main = next(iter(node.main_inputs.values()))
        window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
        sides = [(type(si), si._view_options()) for si in node.side_inputs]
        values = [_whole(self.bags[si.pvalue]) for si in node.side_inputs]
        return input_bag.map_partitions(_run_bundle, node.transform, window_fn,
                                        node.full_label, sides, *values)
