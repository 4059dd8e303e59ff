"""One MirroredStrategy per device set for the whole test session.

Two MirroredStrategy objects over the same devices in one process can mix up their
collective all-reduces ("Shape mismatch in the collective instance"), so every test that
needs a strategy takes it from here.
"""

import functools

from mvae_tf import distribution


@functools.cache
def strategy(*devices):
  return distribution.make_strategy(list(devices))
