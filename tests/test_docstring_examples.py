"""Every self-contained `Example:` block of a layer docstring runs as written."""

import re

import keras
import numpy as np
import pytest
from keras import ops

from autorisk_tf import layers

SELF_CONTAINED = [layers.GatedSeparableConv1D, layers.BlockAttention, layers.EncoderBlock,
                  layers.TransformerBlock, layers.FieldEmbedding, layers.SequenceEncoder,
                  layers.RMSNorm, layers.ByteDropout, layers.IdBag]


@pytest.mark.parametrize("cls", SELF_CONTAINED, ids=lambda c: c.__name__)
def test_docstring_example_runs(cls):
    (code,) = re.findall(r"```python\n(.*?)```", cls.__doc__, flags=re.S)
    namespace = {"keras": keras, "ops": ops, "np": np, **{name: getattr(layers, name)
                                                          for name in layers.__all__}}
    exec(compile(re.sub(r"(?m)^    ", "", code), cls.__name__, "exec"), namespace)
    result = namespace.get("y", namespace.get("out"))
    if isinstance(result, dict):
        result = result["embedding"]
    assert result is not None and np.all(np.isfinite(ops.convert_to_numpy(result)))
