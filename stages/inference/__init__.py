"""Using a trained model outside training: its file, checked as untrusted input before Keras loads it.
No DVC stage imports this package (stages/core is a folder dependency of the train stages)."""
