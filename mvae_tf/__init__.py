"""mvae_tf: the Multi-Entity Variational Autoencoder (Nash et al., 2017) in TF2 / Keras 3.

Importing the package turns on TensorFlow's oneDNN kernels (`TF_ENABLE_ONEDNN_OPTS=1`)
unless the environment already sets the variable. TensorFlow enables them by itself only on
CPUs with AVX-512; on an AVX2-only AMD EPYC they took the training step from 57.6 to
142.7 images/s (3 sprites, batch 64; measured for issue 8). The variable is read when
TensorFlow is first imported, so it has no effect
if TensorFlow was imported before mvae_tf; set it in the environment then.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
