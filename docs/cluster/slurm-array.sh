#!/bin/bash
# One sweep over 4 Slurm array tasks: each runs its share (SLURM_ARRAY_TASK_ID) of the runs with
# `python -m stages.tools.shard` and pushes them as DVC experiments to the Git and DVC remotes.
# Submit from a clone on the shared file system: sbatch docs/cluster/slurm-array.sh
# Collect: git fetch && dvc exp pull origin sweep-0 sweep-1 ...   then   dvc exp show
#SBATCH --job-name=cnn-sweep
#SBATCH --array=0-3
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
# GPU workers: #SBATCH --gres=gpu:1 (and a venv made from requirements-gpu.txt)
set -euo pipefail
# each task works in its own clone: DVC experiments need their own workspace
work="${TMPDIR:-/tmp}/cnn-sweep-$SLURM_ARRAY_TASK_ID"
git clone "$(git remote get-url origin)" "$work" && cd "$work"
python3 -m venv .venv && . .venv/bin/activate && pip install -q -r requirements.txt
dvc pull
python -m stages.tools.shard "$SLURM_ARRAY_TASK_ID" 4 sweep --threads "$SLURM_CPUS_PER_TASK" \
  --target train@objects8_search \
  -S 'experiments.objects8_search.model_args.conv_layers=range(1,6)' \
  -S 'experiments.objects8_search.model_args.filters=choice(8,16,32,45,58,64)'
