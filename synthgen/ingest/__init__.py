"""Real volumes into synthgen datasets (``synthgen ingest``).

- :mod:`.sources`: which files, with their SHA-256 (folder, glob or CSV; labels matched by stem).
- :mod:`.volume`: one volume onto the dataset's grid (intensities, orientation, spacing, shape).
- :mod:`.run`: the command: sources -> the ``ingest`` engine's config -> the same writer as
  ``synthgen generate``.

The per-sample work is the engine ``synthgen.engines.ingest.Ingest``.
"""
