#!/usr/bin/env bash
# Rebuild the shipped sample: the mock universe, the four pretrained sample models and their
# cached embeddings. About 4 minutes for the universe and ~1 hour of CPU training on 2 cores.
# Regenerate only when the generator's output really changes: every copy stays in git history.
set -euo pipefail
cd "$(dirname "$0")/.."
ds=sample_data/universe
models=assets/models
if [ "${1:-}" != "--models-only" ]; then
    galexplore sample "$ds" --n-galaxies 2200 --views 2 --seed 2020 --storage compact --overwrite
fi
rm -rf "$models/cae_mom1" "$models/cae_free_mom1" "$models/env_vae" "$models/mass_regressor"
mdm=$(for k in $(seq -w 0 19); do printf -- '--target log_mdm_%s ' "$k"; done)
# Two single-threaded streams use both cores better than one two-threaded stream.
(
    OMP_NUM_THREADS=1 galexplore train cae "$ds" "$models/cae_mom1" --epochs 40 --seed 0
    OMP_NUM_THREADS=1 galexplore train vae "$ds" "$models/env_vae" --epochs 30 --seed 0
) &
(
    OMP_NUM_THREADS=1 galexplore train cae-free "$ds" "$models/cae_free_mom1" --epochs 40 --seed 0
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 galexplore train regressor "$ds" "$models/mass_regressor" --epochs 30 --seed 0 \
        --noisy-labels --target log_mstar --target log_mgas --target log_m200 --target log_mtot_hsm \
        --target log_mstar_hsm --target distance $mdm
) &
wait
for m in "$models"/*/; do galexplore embed "$m" "$ds"; done
