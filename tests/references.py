"""Independent numpy references of the encoder's layers (float64, one sequence at a time)."""

import numpy as np
from keras import ops


def weights_by_path(layer):
    """`{"<sublayer>/<variable>": array}` of a layer's variables (the last two path parts)."""
    return {"/".join(v.path.split("/")[-2:]): ops.convert_to_numpy(v).astype(np.float64)
            for v in layer.weights}


def softmax(s, axis=-1):
    """Softmax; a row of only -inf (a query that may attend to nothing) gives NaN."""
    with np.errstate(invalid="ignore"):
        s = s - s.max(axis, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis, keepdims=True)


def conv_reference(x, mask, weights, kernel_size, dilation, padding, gated):
    """GatedSeparableConv1D: masked input, explicit padding, depthwise, pointwise, GLU.

    Args:
        x: [B, T, D]. mask: bool [B, T]. weights: depthwise kernel [k, D, 1] and bias,
            pointwise kernel and bias.
    """
    dw_kernel, dw_bias, pw_kernel, pw_bias = weights
    x = x * mask[..., None]
    span = (kernel_size - 1) * dilation
    left = span if padding == "causal" else span // 2
    padded = np.pad(x, ((0, 0), (left, span - left), (0, 0)))
    depthwise = np.zeros_like(x, dtype=np.float64)
    for t in range(x.shape[1]):
        for j in range(kernel_size):
            depthwise[:, t] += padded[:, t + j * dilation] * dw_kernel[j, :, 0]
    z = (depthwise + dw_bias) @ pw_kernel + pw_bias
    if gated:
        a, b = np.split(z, 2, axis=-1)
        z = a / (1.0 + np.exp(-b))
    return z * mask[..., None]


def attention_reference(w, x, mask, block_size, num_global, causal, head):
    """BlockAttention on one sequence with an explicit dense [N, N + G] mask.

    Step i may attend to step j when both are real, in the same block of `block_size`
    steps and, if causal, j <= i; every step also attends to the G global slots.

    Args:
        w: `weights_by_path` of the layer. x: [N, D]. mask: bool [N].
    """
    def proj(name, inputs):
        out = np.einsum("nd,dhk->nhk", inputs, w[f"{name}/kernel"])
        return out + w.get(f"{name}/bias", 0.0)

    q, k, v = proj("query", x) / np.sqrt(head), proj("key", x), proj("value", x)
    n = x.shape[0]
    blocks = np.arange(n) // block_size
    allowed = (blocks[:, None] == blocks[None, :]) & mask[None, :]
    if causal:
        allowed &= np.arange(n)[None, :] <= np.arange(n)[:, None]
    if num_global:
        pool = np.where(mask[:, None], x @ w["global_pool/kernel"], -np.inf)  # [N, G]
        slots = softmax(pool.T) @ x  # [G, D]: attention-pooled summaries of the real steps
        k = np.concatenate([k, proj("key", slots)], 0)
        v = np.concatenate([v, proj("value", slots)], 0)
        allowed = np.concatenate([allowed, np.ones((n, num_global), bool)], 1)
    scores = np.einsum("qhd,khd->hqk", q, k)
    weights = softmax(np.where(allowed[None], scores, -np.inf))
    weights = np.nan_to_num(weights)  # padded query rows attend to nothing
    out = np.einsum("hqk,khd->qhd", weights, v)
    out = np.einsum("qhd,hdo->qo", out, w["output/kernel"]) + w["output/bias"]
    return out * mask[:, None]


def rms_norm_reference(x, scale, epsilon=1e-5):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + epsilon) * scale


def encoder_block_reference(block, x, mask):
    """EncoderBlock on one sequence: pre-norm residual conv, attention and FFN, dropout off.

    Args:
        block: a built EncoderBlock (its weights and options are read). x: [N, D].
            mask: bool [N].
    """
    subs = dict(block._sublayers)
    norms = {name: ops.convert_to_numpy(norm.scale).astype(np.float64)
             for (name, _), norm in zip(block._sublayers, block._norms, strict=True)}
    m = mask[:, None]
    for name, layer in block._sublayers:
        h = rms_norm_reference(x, norms[name])
        if name == "conv":
            weights = [ops.convert_to_numpy(v).astype(np.float64) for v in layer.weights]
            h = conv_reference(h[None], mask[None], weights, layer.kernel_size,
                               layer.dilation_rate, layer.padding, layer.gated)[0]
        elif name == "attention":
            h = attention_reference(weights_by_path(layer), h, mask, layer.block_size,
                                    layer.num_global, layer.causal, layer._head)
        else:
            (k1, b1), (k2, b2) = [[ops.convert_to_numpy(v).astype(np.float64)
                                   for v in dense.weights] for dense in subs["ffn"].layers]
            h = (np.maximum(h @ k1 + b1, 0.0) @ k2 + b2) * m
        x = x + h
    return x * m
