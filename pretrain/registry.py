"""Recipe name -> recipe class, imported on first use (a recipe's heavy imports stay off the CLI's
start-up path). ``"package.module:Class"`` is accepted wherever a name is."""

from __future__ import annotations

import importlib

from pretrain.recipe import Recipe
from synthgen.errors import SynthgenError

_RECIPES: dict[str, str | type[Recipe]] = {
    "contrastive": "pretrain.recipes.contrastive:ContrastiveRecipe",
    "randreg": "pretrain.recipes.randreg:RandRegRecipe",
    "randreg-finetune": "pretrain.recipes.randreg_finetune:RandRegFinetuneRecipe",
}


def register_recipe(name: str, recipe: str | type[Recipe]) -> None:
    """Make ``recipe`` (a class or ``"package.module:Class"``) available as ``name``."""
    _RECIPES[name] = recipe


def unregister_recipe(name: str) -> None:
    """Forget ``name`` (tests)."""
    _RECIPES.pop(name, None)


def recipe_names() -> list[str]:
    """Registered names."""
    return list(_RECIPES)


def get_recipe(name: str) -> type[Recipe]:
    """The recipe class registered as ``name`` (or named by ``"package.module:Class"``).

    Raises:
        SynthgenError: an unknown name, a module that cannot be imported, or a target that is not
            a Recipe subclass.
    """
    target = _RECIPES.get(name, name if ":" in name else None)
    if target is None:
        raise SynthgenError(f"unknown recipe {name!r}; recipes: {', '.join(recipe_names())}")
    if not isinstance(target, str):
        return target
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SynthgenError(f"recipe {name!r}: cannot import {module_name} ({err}); recipes: "
                            f"{', '.join(recipe_names())}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise SynthgenError(f"{target} is not a pretrain.recipe.Recipe subclass")
    return cls
