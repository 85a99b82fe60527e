"""The comparison configs shipped with parrbm: found by name (``parrbm run quick``) and
listed (``parrbm configs``), in an installed package and in a source checkout alike."""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "shipped_configs", "find_config"]


def configs_dir() -> Path:
    """The folder of the shipped configs: ``parrbm/configs`` in an installed package, the
    checkout's ``configs/`` in an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise FileNotFoundError(
        "parrbm's shipped configs are missing from this installation "
        f"(looked in {here / 'configs'} and {here.parent / 'configs'})"
    )


def shipped_configs() -> list[tuple[str, str, Path]]:
    """(name, description, path) of every shipped config, by name. The description is the
    config's own ``description`` (read as data: YAML's safe loader)."""
    import yaml

    out = []
    for path in sorted(configs_dir().glob("*.yaml"), key=lambda p: p.stem):
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raw = None
        raw = raw if isinstance(raw, dict) else {}
        needs = " (needs root: emulated hosts)" if isinstance(raw.get("network"), dict) else ""
        out.append((path.stem, str(raw.get("description", "")) + needs, path))
    return out


def find_config(name_or_path: str) -> Path:
    """A config file: the path given if there is a file there, else the shipped config of
    that name (``quick`` or ``quick.yaml``). FileNotFoundError names the shipped ones."""
    path = Path(name_or_path)
    if path.exists():  # a file, or something the config reader names for what it is
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml"):
        names = {n: p for n, _, p in shipped_configs()}
        if path.stem in names:
            return names[path.stem]
        raise FileNotFoundError(
            f"{name_or_path}: no such file, and no shipped config of that name; shipped: "
            f"{', '.join(sorted(names))} (parrbm configs lists them)"
        )
    raise FileNotFoundError(f"{name_or_path}: no such file")
