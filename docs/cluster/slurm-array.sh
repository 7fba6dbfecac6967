#!/bin/bash
# One sweep over the tasks of a Slurm array (4 here): each runs its share (SLURM_ARRAY_TASK_ID of
# SLURM_ARRAY_TASK_COUNT) of the runs with `python -m stages.tools.shard` and pushes them as DVC experiments
# to the Git and DVC remotes. Submit from a clone on the shared file system:
#   sbatch docs/cluster/slurm-array.sh                                   # the objects8_search sweep below
#   sbatch --array=0-1 docs/cluster/slurm-array.sh evaluate@<experiment> -S '<param>=choice(a,b)'   # another
# With CNN_VENV=<a venv on the shared file system, made from requirements.txt> in the environment, each task
# activates it instead of installing its own. Collect: git fetch && dvc exp pull origin sweep-0 sweep-1 ...
# then dvc exp show (docs/models.md: getting the best run's model). tests/test_slurm.py runs this file.
#SBATCH --job-name=cnn-sweep
#SBATCH --array=0-3
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
# GPU workers: #SBATCH --gres=gpu:1 (and a venv made from requirements-gpu.txt)
set -euo pipefail
if [ $# -eq 0 ]; then
  set -- evaluate@objects8_search \
    -S 'experiments.objects8_search.model_args.conv_layers=range(1,6)' \
    -S 'experiments.objects8_search.model_args.filters=choice(8,16,32,45,58,64)'
fi
target="$1"
shift
# each task works in its own clone: DVC experiments need their own workspace
work="${TMPDIR:-/tmp}/cnn-sweep-$SLURM_ARRAY_TASK_ID"
git clone "$(git remote get-url origin)" "$work" && cd "$work"
if [ -n "${CNN_VENV:-}" ]; then
  . "$CNN_VENV/bin/activate"
else
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -r requirements.txt
fi
dvc pull --with-deps "$target"
python -m stages.tools.shard "$SLURM_ARRAY_TASK_ID" "$SLURM_ARRAY_TASK_COUNT" sweep \
  --threads "$SLURM_CPUS_PER_TASK" --target "$target" "$@"
