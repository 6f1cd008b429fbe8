"""Recipe name -> recipe class, imported on first use (a recipe's heavy imports stay off the CLI's
start-up path). ``"package.module:Class"`` is accepted wherever a name is."""

from __future__ import annotations

import importlib
import importlib.util

from pretrain.recipe import Recipe
from synthgen.errors import SynthgenError

_RECIPES: dict[str, str | type[Recipe]] = {
    "contrastive": "pretrain.contrastive:ContrastiveRecipe",
    "randreg": "pretrain.randreg:RandRegRecipe",
    "dino": "pretrain.dino:DinoRecipe",
}


def register_recipe(name: str, recipe: str | type[Recipe]) -> None:
    """Make ``recipe`` (a class or ``"package.module:Class"``) available as ``name``."""
    _RECIPES[name] = recipe


def unregister_recipe(name: str) -> None:
    """Forget ``name`` (tests)."""
    _RECIPES.pop(name, None)


def recipe_names(available_only: bool = True) -> list[str]:
    """Registered names; with ``available_only``, those whose module is installed."""
    return [name for name, target in _RECIPES.items() if not available_only or _installed(target)]


def get_recipe(name: str) -> type[Recipe]:
    """The recipe class registered as ``name`` (or named by ``"package.module:Class"``).

    Raises:
        SynthgenError: an unknown name, or a recipe whose module is not part of this installation.
    """
    target = _RECIPES.get(name, name if ":" in name else None)
    if target is None:
        raise SynthgenError(f"unknown recipe {name!r}; recipes: {', '.join(recipe_names()) or 'none installed'}")
    if not isinstance(target, str):
        return target
    module_name, _, class_name = target.partition(":")
    if not _installed(target):
        raise SynthgenError(f"recipe {name!r} is not available in this installation (no module {module_name}); "
                            f"recipes: {', '.join(recipe_names()) or 'none installed'}")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise SynthgenError(f"{target} is not a pretrain.recipe.Recipe subclass")
    return cls


def _installed(target: str | type[Recipe]) -> bool:
    if not isinstance(target, str):
        return True
    try:
        return importlib.util.find_spec(target.partition(":")[0]) is not None
    except ModuleNotFoundError:
        return False
