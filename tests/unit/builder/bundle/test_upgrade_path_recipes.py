"""The recipes a `kubernetes.upgrade_path` lists (builder/bundle/upgradepath.py step_recipes):
one minor each, in order, up to the one below the recipe's, of the same profile; anything else
is refused naming the recipe and the entry, before anything is built."""

import pytest
from lab.bundles import REPO

from builder.bundle.upgradepath import step_recipes
from builder.inputs.recipefile import RecipeError, load_recipe
from installer.format.errors import UsageError


def recipes(tmp_path, outer, path):
    """Copies of manifests/*.yaml in tmp_path; `outer` lists `path` as its upgrade_path."""
    for name in {outer, *path}:
        text = (REPO / "manifests" / f"{name}.yaml").read_text()
        if name == outer:
            listed = "".join(f"\n    - {p}.yaml" for p in path)
            text = text.replace("  image_repository: registry.k8s.io\n",
                                f"  image_repository: registry.k8s.io\n"
                                f"  upgrade_path:{listed}\n", 1)
        (tmp_path / f"{name}.yaml").write_text(text)
    return load_recipe(tmp_path / f"{outer}.yaml")


def test_the_minor_below_passes(tmp_path):
    recipe = recipes(tmp_path, "k8s-1.31-el9-containerd", ["k8s-1.30-el9-containerd"])
    assert recipe.kubernetes.upgrade_path == ("k8s-1.30-el9-containerd.yaml",)
    assert [r.kubernetes.version for r in step_recipes(recipe)] == ["v1.30.14"]


def test_a_missing_minor_is_refused(tmp_path):
    recipe = recipes(tmp_path, "k8s-1.33-el9-containerd", ["k8s-1.31-el9-containerd"])
    with pytest.raises(UsageError) as refused:
        step_recipes(recipe)
    assert "kubernetes.upgrade_path: k8s-1.31-el9-containerd.yaml is Kubernetes v1.31.14, but " \
        "the path needs 1.32 there: one minor each, in order, up to 1.32" in \
        refused.value.message


def test_another_profile_is_refused(tmp_path):
    recipe = recipes(tmp_path, "k8s-1.31-el9-containerd", ["k8s-1.30-el8-containerd"])
    with pytest.raises(UsageError) as refused:
        step_recipes(recipe)
    assert "k8s-1.30-el8-containerd.yaml is for rocky 8.9 x86_64 with containerd, not this " \
        "recipe's rocky 9.4 x86_64 with containerd" in refused.value.message


def test_a_path_entry_must_be_a_recipe_file_beside_it(tmp_path):
    text = (REPO / "manifests" / "k8s-1.31-el9-containerd.yaml").read_text().replace(
        "  image_repository: registry.k8s.io\n",
        "  image_repository: registry.k8s.io\n  upgrade_path: [../k8s-1.30.yaml]\n", 1)
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError) as bad:
        load_recipe(tmp_path / "r.yaml")
    assert "kubernetes.upgrade_path[0]" in str(bad.value)
