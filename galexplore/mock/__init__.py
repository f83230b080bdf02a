"""galexplore.mock: a mock universe of cold-gas discs observed with KinMS.

- ``massmodel``: stellar and gas discs in NFW haloes, drawn from published relations.
- ``particles``: cold-gas particles of regular discs and of the disturbance mechanisms.
- ``galaxies``: ``make_galaxy``, ``circularity`` (kappa) and the catalogue columns.
- ``observe``: KinMS cubes, noise, smooth masking and moment maps.
"""
