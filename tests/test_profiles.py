"""Profiles (conf/profile/*.yaml) hold every stage's budget; the configs read it through
`${profile.<section>.<key>}` interpolations (the model configs for network sizes, the stage configs
for data and trainer budgets). These tests keep the two in step: a profile key nothing reads would
be a setting silently ignored, and an interpolation naming a key a profile lacks would fail only
when that profile and stage run."""

import re
from functools import cache

import pytest
from omegaconf import DictConfig, OmegaConf

from helpers import compose_config
from synthmed_lightning.config import group_options

PROFILES = group_options("profile")
STAGES = group_options("stage")

# Profile keys read by code instead of (or as well as) an interpolation, with the reason; any other
# key must be read by some interpolation of some stage's composed config. (`phantom.*` is read by
# conf/data/phantom.yaml, the default data, and `study.*` by conf/stage/study.yaml: no exception.)
READ_BY_CODE = {
    "name": "the study's identity (study.json), results.json and report.md, W&B tags (stages/study.py, study/report.py)",
}

_REFERENCE = re.compile(r"\$\{profile\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}")
# A section chosen by another value, as in `${profile.${stage}.image_size}` (conf/stage/_dcgan.yaml).
_NESTED_SECTION = re.compile(r"\$\{profile\.\$\{([\w.]+)\}")


@cache
def _composed(profile: str, stage: str) -> DictConfig:
    return compose_config(f"stage={stage}", f"profile={profile}")


def _strings(node):
    """Every string value of a config container, unresolved."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def profile_references(cfg: DictConfig) -> set[str]:
    """Dotted profile keys (`segment.base_channels`) that interpolations outside the profile name."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("profile", None)
    found = set()
    for text in _strings(container):
        text = _NESTED_SECTION.sub(lambda m: "${profile." + str(OmegaConf.select(cfg, m.group(1))), text)
        found.update(_REFERENCE.findall(text))
    return found


def profile_keys(profile: DictConfig) -> set[str]:
    """Dotted leaf keys of a profile (`segment.base_channels`, `phantom.count`, `name`)."""
    def leaves(node, prefix):
        for key in node:
            value = node._get_node(key)
            path = f"{prefix}{key}"
            if isinstance(value, DictConfig):
                yield from leaves(value, path + ".")
            else:
                yield path
    return set(leaves(profile, ""))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("stage", STAGES)
def test_every_profile_interpolation_names_a_key_the_profile_has(profile, stage):
    cfg = _composed(profile, stage)
    keys = profile_keys(cfg.profile)
    missing = sorted(ref for ref in profile_references(cfg)
                     if ref not in keys and not any(k.startswith(ref + ".") for k in keys))
    assert not missing, f"stage={stage} reads profile.{missing[0]}, which conf/profile/{profile}.yaml does not define"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_key_is_read(profile):
    keys = profile_keys(_composed(profile, STAGES[0]).profile)
    used = set().union(*(profile_references(_composed(profile, stage)) for stage in STAGES))
    unread = sorted(key for key in keys
                    if key not in READ_BY_CODE and not any(key == ref or key.startswith(ref + ".") for ref in used))
    assert not unread, (f"conf/profile/{profile}.yaml sets {', '.join(unread)}, which no stage's config reads "
                        "(a silently ignored setting): wire it with ${profile.<section>.<key>} or remove it")


def test_the_reference_finder_sees_nested_and_wrapped_interpolations():
    cfg = OmegaConf.create({"stage": "mask", "profile": {"mask": {"iterations": 3, "z_dim": 4}},
                            "a": "${gan_max_steps:${profile.mask.iterations}}", "b": ["${profile.${stage}.z_dim}"]})
    assert profile_references(cfg) == {"mask.iterations", "mask.z_dim"}


def test_a_model_config_shows_the_profile_values_it_takes():
    """The network sizes are set where the network is configured, not replaced later by the stage."""
    for stage, section, paths in (("segment", "segment", ("net.base_channels", "net.depth", "tile_size")),
                                  ("image", "image", ("generator.base_channels", "generator.num_downs",
                                                      "discriminator.base_channels"))):
        stage_cfg = OmegaConf.load(_conf_file("stage", stage))
        assert "model" not in stage_cfg, f"conf/stage/{stage}.yaml overrides model settings"
        model_cfg = OmegaConf.load(_conf_file("model", stage_cfg.defaults[0]["override /model"]))
        for path in paths:
            value = OmegaConf.to_container(model_cfg, resolve=False)
            for part in path.split("."):
                value = value[part]
            assert isinstance(value, str) and value.startswith(f"${{profile.{section}."), (stage, path, value)


def _conf_file(group: str, name: str):
    from synthmed_lightning.resources import config_dir

    return config_dir() / group / f"{name}.yaml"
