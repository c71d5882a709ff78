"""The loop's optimizers: a sparse gradient updates only its rows, as Adam would."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.training.optimizers import summed_gradients_optimizer


def _table(rows=6, width=3):
    keras.utils.set_random_seed(0)
    return keras.Variable(np.random.default_rng(0).normal(size=(rows, width)).astype("float32"))


@pytest.mark.parametrize("weight_decay", [None, 0.1])
def test_sparse_rows_move_as_with_the_dense_gradient_and_others_stay(weight_decay):
    grad = tf.IndexedSlices(tf.constant([[1.0, -2.0, 0.5], [0.5, 0.5, 0.5], [3.0, 0.0, 1.0]]),
                            tf.constant([1, 4, 1]), dense_shape=tf.constant([6, 3]))
    sparse_table, dense_table = _table(), _table()
    before = sparse_table.numpy()
    for table, g in ((sparse_table, grad), (dense_table, tf.convert_to_tensor(grad))):
        opt = summed_gradients_optimizer(keras.optimizers.AdamW)(
            0.1, weight_decay=weight_decay or 0.0)
        opt.build([table])
        opt.apply([g], [table])
    touched, untouched = [1, 4], [0, 2, 3, 5]
    np.testing.assert_allclose(sparse_table.numpy()[touched], dense_table.numpy()[touched],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sparse_table.numpy()[untouched], before[untouched])
    assert not np.allclose(sparse_table.numpy()[touched], before[touched])
    if weight_decay:  # the dense step decays every row; the lazy one only its rows
        assert not np.allclose(dense_table.numpy()[untouched], before[untouched])


def test_sparse_moments_of_unused_rows_wait():
    table = _table()
    opt = summed_gradients_optimizer(keras.optimizers.Adam)(0.01)
    opt.build([table])
    first = tf.IndexedSlices(tf.ones((1, 3)), tf.constant([2]), dense_shape=tf.constant([6, 3]))
    second = tf.IndexedSlices(tf.ones((1, 3)), tf.constant([5]), dense_shape=tf.constant([6, 3]))
    opt.apply([first], [table])
    m = opt._momentums[0].numpy().copy()
    opt.apply([second], [table])
    np.testing.assert_array_equal(opt._momentums[0].numpy()[2], m[2])  # no decay of row 2
    np.testing.assert_allclose(opt._momentums[0].numpy()[5], 0.1 * np.ones(3), rtol=1e-6)


def test_sgd_takes_a_sparse_gradient_dense():
    table = _table()
    before = table.numpy()
    opt = summed_gradients_optimizer(keras.optimizers.SGD)(0.5)
    opt.build([table])
    opt.apply([tf.IndexedSlices(tf.ones((1, 3)), tf.constant([0]),
                                dense_shape=tf.constant([6, 3]))], [table])
    np.testing.assert_allclose(table.numpy()[0], before[0] - 0.5, rtol=1e-6)
    np.testing.assert_array_equal(table.numpy()[1:], before[1:])
