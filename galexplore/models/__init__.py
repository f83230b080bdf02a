"""galexplore.models: encoders, their checkpoints and the zoo of published ones.

- `registry`: architecture names -> builders (`build_model`).
- `cae`: the Dawson et al. 2020 CAE (`DawsonCAE`) and its index-free-decoder variant.
- `checkpoint`: `ModelCard`, `save_checkpoint` / `load_checkpoint` (safetensors + JSON),
  `check_compatible`.
- `device`: `resolve_device("auto")`.
- `legacy`: the opt-in, restricted import of legacy pickles.
- `zoo`: published encoders (fetch, convert once, resolve by name).
"""
