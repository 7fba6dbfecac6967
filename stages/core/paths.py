"""Where each stage reads and writes (relative to the repository root, as dvc.yaml says)."""

from pathlib import Path

RAW = Path("data/raw")  # download@<source>
EXTRACTED = Path("data/extracted")  # extract@<source>
PREPARED = Path("data/prepared")  # prepare@<dataset>
MODELS = Path("models")  # train@<experiment>
CHECKPOINTS = Path("checkpoints")  # per-epoch state of an unfinished training run (not a DVC output)
REPORTS = Path("reports")
EXPERIMENT_REPORTS = REPORTS / "experiments"  # train@<experiment>: its logs and test scores
PLOTS = REPORTS / "plots"  # the data of the plots declared at the top of dvc.yaml, one folder a chart kind
RECORDS = REPORTS / "reproduction"  # real-data run records (python -m stages.tools.record), committed to Git
