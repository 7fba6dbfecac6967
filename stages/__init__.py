"""Stage scripts of the CNN studies pipeline (one module per DVC stage, plus registries)."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) hides the stage's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
