"""Readers for the deploy files, so tests run the exporter exactly as systemd and a container runtime would.

Each reader implements the part of its format the deploy files use, the way the real tool reads it:
systemd unit files and EnvironmentFile=, ExecStart= quoting with ``$VAR``/``${VAR}`` and ``%`` specifiers,
Dockerfile instructions with continuations, ENV, exec-form CMD/ENTRYPOINT/HEALTHCHECK, and .dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


# ---------------------------------------------------------------- systemd


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}`` in file order; keys may repeat (e.g. SystemCallFilter=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path}: cannot read line {raw!r}")
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def parse_env_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile=: KEY=VALUE lines, '#'/';' comments, optional single or double quotes."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def unit_environment(unit: dict[str, list[tuple[str, str]]], specifiers: dict[str, str]) -> dict[str, str]:
    """The Environment= assignments of [Service], with % specifiers resolved."""
    env: dict[str, str] = {}
    for assignment in unit_values(unit, "Service", "Environment"):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = expand_specifiers(value, specifiers)
    return env


def expand_specifiers(text: str, specifiers: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        letter = m.group(1)
        if letter == "%":
            return "%"
        if letter not in specifiers:
            raise KeyError(f"specifier %{letter} not provided")
        return specifiers[letter]

    return re.sub(r"%(.)", sub, text)


def expand_exec(command: str, env: dict[str, str], specifiers: dict[str, str]) -> list[str]:
    """An ExecStart= line as systemd turns it into argv (systemd.service(5), "Command lines").

    Leading special prefixes (-@:+!) are dropped; ``${VAR}`` becomes exactly one word, a word that is
    just ``$VAR`` becomes the variable's whitespace-separated words (none if empty or unset).
    """
    command = command.lstrip("-@:+!")
    argv: list[str] = []
    for word in shlex.split(expand_specifiers(command, specifiers)):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


# ---------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case
    flags: list[str]  # e.g. ["--mount=type=bind,..."] or ["--interval=30s", ...]
    rest: str  # everything after the flags


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):  # comments (and parser directives) inside continuations are skipped
            continue
        if not stripped and not pending:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its instructions after FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, flags, rest))
        else:
            raise ValueError(f"{path}: {keyword} before the first FROM")
    return args, stages


def parse_env_instruction(rest: str) -> dict[str, str]:
    """``ENV a=1 b="two words"`` (the legacy ``ENV key value`` form too)."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not an exec-form JSON array: {rest}")
    return list(value)


@dataclass
class Container:
    """What `docker run IMAGE` starts: the final stage's environment, argv, user and healthcheck."""

    env: dict[str, str]
    argv: list[str]
    user: str
    exposed: list[str]
    healthcheck: list[str]
    volumes: list[str]


def container_of(path: Path) -> Container:
    _, stages = parse_dockerfile(path)
    final = stages[-1]
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    user = "root"
    exposed: list[str] = []
    healthcheck: list[str] = []
    volumes: list[str] = []
    for ins in final.instructions:
        if ins.keyword == "ENV":
            env.update(parse_env_instruction(ins.rest))
        elif ins.keyword == "ENTRYPOINT":
            entrypoint = exec_form(ins.rest)
            cmd = []  # a new ENTRYPOINT resets CMD, as docker does
        elif ins.keyword == "CMD":
            cmd = exec_form(ins.rest)
        elif ins.keyword == "USER":
            user = ins.rest
        elif ins.keyword == "EXPOSE":
            exposed.extend(ins.rest.split())
        elif ins.keyword == "VOLUME":
            volumes.extend(exec_form(ins.rest) if ins.rest.startswith("[") else ins.rest.split())
        elif ins.keyword == "HEALTHCHECK":
            kind, _, hc = ins.rest.partition(" ")
            if kind.upper() != "CMD":
                raise ValueError(f"HEALTHCHECK {kind} not understood")
            healthcheck = exec_form(hc.strip())
    return Container(env, entrypoint + cmd, user, exposed, healthcheck, volumes)


def dockerignore_allows(patterns: list[str], relpath: str) -> bool:
    """Docker's rule: the last matching pattern wins, '!' re-includes; a path is excluded with its parents."""
    parts = relpath.split("/")
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(prefix, pat[3:])):
                included = negate
                break
            if pat.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], pat[3:]):
                included = negate
                break
    return included


def copy_build_context(src: Path, dest: Path) -> list[str]:
    """Copy what `docker build src` would send as context, by src/.dockerignore; returns the files copied."""
    ignore = src / ".dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    reincluded = [p[1:].strip("/") for p in patterns if p.startswith("!")]
    copied: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            rel = (here / d).relative_to(src).as_posix()
            # descend only where something can be included (pruning .venv, .git, ... keeps this fast)
            if dockerignore_allows(patterns, rel) or any(r == rel or r.startswith(rel + "/") for r in reincluded):
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(src).as_posix()
            if not path.is_symlink() and dockerignore_allows(patterns, rel):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied.append(rel)
    return copied
