"""What encoders learn: projections, boundaries, position angle, the papers' metrics, saliency.

Modules (import them directly; this package imports nothing heavy on its own):
``projections`` (PCA, folding, UMAP), ``boundaries`` (TP = TN vertical boundary, learned
classifiers), ``position_angle``, ``stats``, ``saliency``, ``evaluate`` (``galexplore evaluate``),
``embed`` (the embedding table) and ``selection`` (lasso / box selections).
"""
