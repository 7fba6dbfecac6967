"""The CNN studies pipeline: DVC stage entry points (``python -m stages.<stage>``) and their library."""

import os

# TensorFlow's C++ log: 2 drops INFO and WARNING (oneDNN and CPU-instruction notices), keeps ERROR and
# FATAL; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything. (The CPU install, tensorflow-cpu,
# has no CUDA probes to complain; the GPU install's probes find their GPU.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# OpenCV reads its decode-size limit once, at import: set it before anything imports cv2,
# so an image claiming enormous dimensions is refused instead of allocated.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**28))
# Take GPU memory as needed rather than all of it up front, so that queue workers
# (`dvc queue start -j N`) can share one GPU.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
