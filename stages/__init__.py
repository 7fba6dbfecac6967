"""Stage scripts of the CNN studies pipeline (one module per DVC stage, plus registries)."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) hides the stage's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# OpenCV reads its decode-size limit once, at import: set it before anything imports cv2,
# so an image claiming enormous dimensions is refused instead of allocated.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**28))
# Take GPU memory as needed rather than all of it up front, so that queue workers
# (`dvc queue start -j N`) can share one GPU.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
