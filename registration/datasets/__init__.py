"""Registration pairs: pair files (CSV or a Learn2Reg ``dataset.json``) and loading one pair.

:func:`read_pairs` only parses the pair file (cheap; a malformed file fails as a whole).
:func:`load_pair` does every read for one pair, so a bad pair fails alone with a one-line
:class:`SynthgenError` naming the pair, the file and the fix.

Axes and units. Arrays keep the axis order nibabel returns for the file (NIfTI i, j, k become
the project's D, H, W; nothing is reoriented), and the spacing is the header's voxel size
(``get_zooms()``) along those axes in mm. ``.npy``/``.npz`` files carry no geometry: their
spacing comes from the ``fixed_spacing``/``moving_spacing`` options, else it is unknown (taken as
1 mm when the two images have one shape and no other spacing is known).

Intensities are returned as stored (as float32); normalisation belongs to the feature
extractors.

Modules:

- :mod:`.pair_files`: :class:`PairSpec` and :func:`read_pairs` (pairs CSV, Learn2Reg
  ``dataset.json``).
- :mod:`.volumes`: reading image, label and mask volumes and landmark point files.
- :mod:`.grids`: voxel grids and the fixed-voxel -> moving-voxel alignment (``align``).
- :mod:`.labels`: label maps, mask folders, label ids and landmarks.
- :mod:`.loading`: :class:`RegistrationPair` and :func:`load_pair`.
"""


from registration.datasets.grids import TIE_BREAK
from registration.datasets.loading import RegistrationPair, load_pair
from registration.datasets.pair_files import (
    ALIGNMENTS,
    OPTION_COLUMNS,
    PATH_COLUMNS,
    SPLITS,
    PairSpec,
    Spacing,
    read_pairs,
)
from registration.datasets.volumes import NIFTI

__all__ = ["ALIGNMENTS", "NIFTI", "OPTION_COLUMNS", "PATH_COLUMNS", "SPLITS", "TIE_BREAK", "PairSpec",
           "RegistrationPair", "Spacing", "load_pair", "read_pairs"]
