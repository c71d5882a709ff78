"""The training loop's optimizers: gradients summed over replicas, sparse rows updated lazily."""

from __future__ import annotations

import keras
import tensorflow as tf


def _rows(variable, rows: tf.Tensor) -> tf.Tensor:
    """Some rows of a (Keras or TensorFlow) variable, read without copying the rest."""
    if isinstance(variable, keras.Variable):
        variable = variable.value  # the tf.Variable: `tf.gather` on it is a sparse read
    return tf.gather(variable, rows)


def summed_rows(gradient):
    """A gradient with each row once: `IndexedSlices` repeat a row used several times.

    Summing them before the all-reduce makes a sparse all-reduce add the same numbers in the
    same order as a dense one (each replica's rows, then the replicas), so several workers
    train as one does; other gradients pass unchanged.

    Args:
        gradient: a tensor or `tf.IndexedSlices`.

    Returns:
        The gradient, as `IndexedSlices` with unique indices where it was `IndexedSlices`.
    """
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    rows, where = tf.unique(gradient.indices)
    return tf.IndexedSlices(tf.math.unsorted_segment_sum(gradient.values, where,
                                                         tf.shape(rows)[0]),
                            rows, gradient.dense_shape)


def summed_gradients_optimizer(cls: type) -> type:
    """A Keras optimizer class that takes summed gradients and updates sparse rows lazily.

    Summed gradients: Keras 3.15's TensorFlow optimizers all-reduce the gradients they are
    given. The loop all-reduces them itself, to clip the global norm of the summed gradient
    (Keras clips per replica), so a second all-reduce would only cost another pass over the
    network. This overrides a private method of the pinned Keras; the two-worker SGD test
    fails if a Keras upgrade changes it (the update would then be off by the number of
    replicas).

    Sparse rows: an embedding table read by a gather gets its gradient as `tf.IndexedSlices`
    (the rows the batch used). Keras' Adam densifies it, so a step costs a pass over every
    row of every table: at a million hashed ids that pass is most of the step. For Adam and
    AdamW this class updates only the rows in the gradient, as TensorFlow's LazyAdam did
    (the moments of other rows wait until their row is used again), and applies AdamW's
    decoupled weight decay to those rows only. Other optimizers get the gradient dense.

    Args:
        cls: a `keras.optimizers.Optimizer` subclass (the loop uses AdamW and SGD).

    Returns:
        The subclass, with the same name.
    """
    class SummedGradients(cls):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

        def apply(self, grads, trainable_variables=None):
            variables = trainable_variables or self._trainable_variables
            # Trace-time bookkeeping: the tables whose rows `update_step` decays itself.
            self._sparse_keys = {self._var_key(v) for g, v in zip(grads, variables, strict=True)
                                 if isinstance(g, tf.IndexedSlices)}
            return super().apply(grads, trainable_variables)

        def _use_weight_decay(self, variable):
            if self._var_key(variable) in getattr(self, "_sparse_keys", ()):
                return False
            return super()._use_weight_decay(variable)

        def update_step(self, gradient, variable, learning_rate):
            if not isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable, learning_rate)
            if not hasattr(self, "_velocities"):
                return super().update_step(tf.convert_to_tensor(gradient), variable,
                                           learning_rate)
            return self._sparse_adam_step(gradient, variable, learning_rate)

        def _sparse_adam_step(self, gradient, variable, learning_rate):
            """Adam (and AdamW's decay) on the rows of an `IndexedSlices` gradient."""
            dtype = variable.dtype
            gradient = summed_rows(gradient)
            rows, values = gradient.indices, tf.cast(gradient.values, dtype)
            lr = tf.cast(learning_rate, dtype)
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            index = self._get_variable_index(variable)
            m, v = self._momentums[index], self._velocities[index]
            m_rows = _rows(m, rows) * beta_1 + values * (1 - beta_1)
            v_rows = _rows(v, rows) * beta_2 + tf.square(values) * (1 - beta_2)
            self.assign(m, tf.IndexedSlices(m_rows, rows))
            self.assign(v, tf.IndexedSlices(v_rows, rows))
            delta = alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype))
            if self.weight_decay and super()._use_weight_decay(variable):
                delta += _rows(variable, rows) * lr * tf.cast(self.weight_decay, dtype)
            self.assign_sub(variable, tf.IndexedSlices(delta, rows))

    SummedGradients.__name__ = cls.__name__
    return SummedGradients
