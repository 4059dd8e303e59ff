"""The learning-rate annealing of appendix A: 1e-3 to 1e-5 over the training steps."""

import keras
import tensorflow as tf


class LogLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
  """lr(t) = lr_0 * (lr_T / lr_0) ** (min(t, T) / T): log-linear from lr_0 to lr_T.

  Up to step T this is `keras.optimizers.schedules.ExponentialDecay(lr_0, T, lr_T / lr_0)`;
  it differs after T, where Keras's keeps decaying and this one holds lr_T. A run trains
  past T when `--schedule_steps` is below `--train_steps`, and the paper's floor is lr_T.

  Args:
    initial_learning_rate: lr_0 > 0, the rate at step 0.
    final_learning_rate: lr_T > 0, the rate from step T on.
    decay_steps: T >= 1.
  """

  def __init__(self, initial_learning_rate, final_learning_rate, decay_steps):
    if initial_learning_rate <= 0 or final_learning_rate <= 0 or decay_steps < 1:
      raise ValueError(
          "Invalid arguments to LogLinearDecay. Expected learning rates > 0 and "
          f"decay_steps >= 1. Received: initial_learning_rate={initial_learning_rate}, "
          f"final_learning_rate={final_learning_rate}, decay_steps={decay_steps}")
    self.initial_learning_rate = initial_learning_rate
    self.final_learning_rate = final_learning_rate
    self.decay_steps = decay_steps

  def __call__(self, step):
    progress = tf.minimum(tf.cast(step, tf.float32) / float(self.decay_steps), 1.0)
    ratio = self.final_learning_rate / self.initial_learning_rate
    return self.initial_learning_rate * tf.pow(tf.constant(ratio, tf.float32), progress)

  def get_config(self):
    return {"initial_learning_rate": self.initial_learning_rate,
            "final_learning_rate": self.final_learning_rate,
            "decay_steps": self.decay_steps}
