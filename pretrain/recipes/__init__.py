"""The pretraining methods, one module each (see :mod:`pretrain.recipe` for what a recipe
supplies and :mod:`pretrain.registry` for their names): ``contrastive`` (anatomix) and
``randreg`` (random-image registration pretraining)."""
