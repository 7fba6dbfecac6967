"""Training: data pipelines, the machine (precision, strategy), the recipe in Keras objects, callbacks,
outputs. The loop itself reads top to bottom in stages/train.py."""
