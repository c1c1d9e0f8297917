"""faas-cli stack files (`stack.yml`): parsed, validated, and turned into builds and deployments.

Parsing follows faas-cli, so an OpenFaaS stack file means the same thing here:
- `${VAR}`, `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset) are substituted in
  the raw text before YAML parsing, as faas-cli's envsubst does; `$${` is a literal `${`.
- Scalars are read as text, the way faas-cli's yaml.v2 decodes them into string fields
  (`max_inflight: 10` is "10", `debug: yes` is "yes", not True).
- `environment_file` values override inline `environment` (faas-cli documents it so).
- Unknown fields are ignored with a warning rather than rejected, so files written for newer
  faas-cli versions still load; duplicate keys are errors, since one of them would be lost.
Every error is an InvalidSpec naming the file, the function and the field.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.build.builder import KNOWN_LANGS, FunctionBuild
from runtime.errors import InvalidSpec
from runtime.models import Resources
from runtime.names import check_name

_FUNCTION_FIELDS = frozenset(
    {
        "lang",
        "handler",
        "image",
        "fprocess",
        "environment",
        "environment_file",
        "secrets",
        "labels",
        "annotations",
        "limits",
        "requests",
        "readonly_root_filesystem",
        "build_args",
        "constraints",
        "namespace",
        "skip_build",
    }
)
# faas-cli fields that only make sense for its own templates or remote builders.
_UNSUPPORTED_FIELDS = frozenset({"build_options", "build_secrets", "platforms"})
_TOP_LEVEL_FIELDS = frozenset({"version", "provider", "functions", "configuration"})
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kKMGTPEmb]|[eE][0-9]+)?$")
_CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
_TRUE = frozenset({"true", "yes", "on", "y"})
_FALSE = frozenset({"false", "no", "off", "n"})
_SUBST = re.compile(r"(\$\$\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=])([^}]*))?\}")


@dataclass(frozen=True)
class Provider:
    name: str | None
    gateway: str | None


@dataclass(frozen=True)
class StackFunction:
    name: str
    image: str
    lang: str | None = None
    handler: Path | None = None  # absolute: resolved against the stack file's folder
    fprocess: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    environment_file: tuple[Path, ...] = ()
    environment_from_files: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    limits: Resources | None = None
    requests: Resources | None = None
    readonly_root_filesystem: bool = False
    build_args: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()
    namespace: str | None = None
    skip_build: bool = False

    @property
    def env_vars(self) -> dict[str, str]:
        """What the function's process sees: inline environment, overridden by the files."""
        return {**self.environment, **self.environment_from_files}

    @property
    def buildable(self) -> bool:
        return not self.skip_build and self.lang is not None


@dataclass(frozen=True)
class Stack:
    path: str  # as given, for messages
    version: str | None
    provider: Provider | None
    functions: tuple[StackFunction, ...]
    # Non-fatal findings (unknown fields, unset variables) for the CLI to show.
    warnings: tuple[str, ...] = ()

    def function(self, name: str) -> StackFunction:
        for fn in self.functions:
            if fn.name == name:
                return fn
        known = ", ".join(fn.name for fn in self.functions)
        raise InvalidSpec(f"{self.path}: no function {name!r} (it defines: {known})")

    def select(
        self, *, glob: str | None = None, regex: str | None = None
    ) -> tuple[StackFunction, ...]:
        """faas-cli's `--filter` (a glob) or `--regex` (searched in the name)."""
        if glob and regex:
            raise InvalidSpec("pass --filter or --regex, not both")
        if not glob and not regex:
            return self.functions
        if regex:
            try:
                pattern = re.compile(regex)
            except re.error as exc:
                raise InvalidSpec(
                    f"--regex {regex!r} is not a valid regular expression: {exc}"
                ) from None
            chosen = tuple(fn for fn in self.functions if pattern.search(fn.name))
        else:
            assert glob is not None
            chosen = tuple(fn for fn in self.functions if fnmatch.fnmatchcase(fn.name, glob))
        if not chosen:
            raise InvalidSpec(f"{self.path}: no function matches --filter/--regex")
        return chosen


def substitute_env(text: str, env: Mapping[str, str]) -> str:
    """Expand `${VAR}`, `${VAR:-default}`, `${VAR-default}` (and `=` forms) from `env`."""
    return _substitute(text, env, [])


def load_stack(path: Path | str, env: Mapping[str, str]) -> Stack:
    """Read and validate a stack file; `env` feeds `${VAR}` substitution."""
    source = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{source}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{source}: cannot read: {exc}") from None
    return parse_stack(text, source=source, base_dir=file.resolve().parent, env=env)


def parse_stack(text: str, *, source: str, base_dir: Path, env: Mapping[str, str]) -> Stack:
    warnings: list[str] = []
    unset: list[str] = []
    expanded = _substitute(text, env, unset)
    for name in dict.fromkeys(unset):
        warnings.append(f"{source}: variable {name} is not set; substituted an empty string")
    doc = _load_yaml(expanded, source)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidSpec(f"{source}: expected a map with 'provider' and 'functions' at the top")
    for key in doc:
        if key not in _TOP_LEVEL_FIELDS:
            warnings.append(f"{source}: unknown top-level field {key!r} ignored")

    version = doc.get("version")
    if version is not None and not isinstance(version, str):
        raise InvalidSpec(f'{source}: version must be a string like "1.0"')
    provider = _provider(doc.get("provider"), source)

    raw_functions = doc.get("functions")
    if raw_functions is None or raw_functions == {}:
        raise InvalidSpec(f"{source}: no functions defined (expected a 'functions:' map)")
    if not isinstance(raw_functions, dict):
        raise InvalidSpec(f"{source}: functions must be a map of function name to settings")
    functions = tuple(
        _function(name, body, source, base_dir, warnings) for name, body in raw_functions.items()
    )
    return Stack(
        path=source,
        version=version,
        provider=provider,
        functions=functions,
        warnings=tuple(warnings),
    )


def to_deployment(fn: StackFunction) -> dict[str, Any]:
    """The OpenFaaS FunctionDeployment body for `fn`, empty optional fields left out."""
    out: dict[str, Any] = {"service": fn.name, "image": fn.image}
    if fn.namespace:
        out["namespace"] = fn.namespace
    if fn.fprocess:
        out["envProcess"] = fn.fprocess
    env_vars = fn.env_vars
    if env_vars:
        out["envVars"] = env_vars
    if fn.constraints:
        out["constraints"] = list(fn.constraints)
    if fn.secrets:
        out["secrets"] = list(fn.secrets)
    if fn.labels:
        out["labels"] = dict(fn.labels)
    if fn.annotations:
        out["annotations"] = dict(fn.annotations)
    if fn.limits is not None:
        out["limits"] = fn.limits.to_json()
    if fn.requests is not None:
        out["requests"] = fn.requests.to_json()
    if fn.readonly_root_filesystem:
        out["readOnlyRootFilesystem"] = True
    return out


def to_build(fn: StackFunction) -> FunctionBuild:
    """What `localfaas build` builds for `fn`; InvalidSpec when it is not to be built."""
    if fn.skip_build:
        raise InvalidSpec(f"function {fn.name!r} has skip_build: true; it is not built")
    if fn.lang is None or fn.handler is None:
        raise InvalidSpec(f"function {fn.name!r}: lang and handler are needed to build it")
    return FunctionBuild(
        name=fn.name,
        lang=fn.lang,
        handler_dir=fn.handler,
        image=fn.image,
        build_args=dict(fn.build_args),
    )


# -- parsing helpers ---------------------------------------------------------------------------


def _function(
    name: object, body: object, source: str, base_dir: Path, warnings: list[str]
) -> StackFunction:
    where = f"{source}: function {name!r}"
    try:
        check_name(name, "name")
    except InvalidSpec as exc:
        raise InvalidSpec(f"{where}: {exc}") from None
    assert isinstance(name, str)
    if body is None:
        raise InvalidSpec(f"{where}: no settings (expected at least lang, handler and image)")
    if not isinstance(body, dict):
        raise InvalidSpec(f"{where}: expected a map of settings (lang, handler, image, ...)")
    for key in body:
        if key in _UNSUPPORTED_FIELDS:
            warnings.append(f"{where}: {key!r} is not supported by localfaas and is ignored")
        elif key not in _FUNCTION_FIELDS:
            warnings.append(f"{where}: unknown field {key!r} ignored")

    image = _opt_str(body.get("image"), where, "image")
    if not image:
        raise InvalidSpec(f"{where}: image is required (the image name to build or deploy)")
    if any(c.isspace() for c in image):
        raise InvalidSpec(f"{where}: image {image!r} must not contain white space")
    skip_build = _bool(body.get("skip_build"), where, "skip_build")
    lang = _opt_str(body.get("lang"), where, "lang")
    if lang == "Dockerfile":  # faas-cli accepts this spelling too
        lang = "dockerfile"
    if not lang and not skip_build:
        raise InvalidSpec(f"{where}: lang is required unless image is set with skip_build")
    handler_raw = _opt_str(body.get("handler"), where, "handler")
    if lang and not skip_build and not handler_raw:
        raise InvalidSpec(f"{where}: handler is required (the folder with the function's code)")
    if lang and not skip_build and lang not in KNOWN_LANGS:
        warnings.append(
            f"{where}: lang {lang!r} cannot be built by localfaas (it builds "
            + ", ".join(KNOWN_LANGS)
            + "); set skip_build and a prebuilt image to deploy it"
        )

    namespace = _opt_str(body.get("namespace"), where, "namespace") or None
    if namespace is not None:
        _check(namespace, where, "namespace")
    secrets = _str_list(body.get("secrets"), where, "secrets")
    for secret in secrets:
        _check(secret, where, "secret name")

    env_files = tuple(
        (base_dir / item)
        for item in _str_list(body.get("environment_file"), where, "environment_file")
    )
    from_files: dict[str, str] = {}
    for env_file in env_files:
        from_files.update(_read_env_file(env_file, where))

    return StackFunction(
        name=name,
        image=image,
        lang=lang or None,
        handler=(base_dir / handler_raw) if handler_raw else None,
        fprocess=_opt_str(body.get("fprocess"), where, "fprocess") or None,
        environment=_str_map(body.get("environment"), where, "environment"),
        environment_file=env_files,
        environment_from_files=from_files,
        secrets=secrets,
        labels=_str_map(body.get("labels"), where, "labels"),
        annotations=_str_map(body.get("annotations"), where, "annotations"),
        limits=_resources(body.get("limits"), where, "limits", warnings),
        requests=_resources(body.get("requests"), where, "requests", warnings),
        readonly_root_filesystem=_bool(
            body.get("readonly_root_filesystem"), where, "readonly_root_filesystem"
        ),
        build_args=_str_map(body.get("build_args"), where, "build_args"),
        constraints=_str_list(body.get("constraints"), where, "constraints"),
        namespace=namespace,
        skip_build=skip_build,
    )


def _provider(raw: object, source: str) -> Provider | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{source}: provider must be a map like {{name: openfaas, gateway: URL}}")
    where = f"{source}: provider"
    return Provider(
        name=_opt_str(raw.get("name"), where, "name") or None,
        gateway=_opt_str(raw.get("gateway"), where, "gateway") or None,
    )


def _read_env_file(path: Path, where: str) -> dict[str, str]:
    label = f"{where}: environment_file {path.name!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{label}: file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{label}: cannot read {path}: {exc}") from None
    doc = _load_yaml(text, f"{label}")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidSpec(f"{label}: expected a map with an 'environment:' map")
    return _str_map(doc.get("environment"), label, "environment")


def _check(value: str, where: str, what: str) -> None:
    try:
        check_name(value, what)
    except InvalidSpec as exc:
        raise InvalidSpec(f"{where}: {exc}") from None


def _opt_str(raw: object, where: str, name: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidSpec(f"{where}: {name} must be a single value, not a {_kind(raw)}")
    return raw


def _bool(raw: object, where: str, name: str) -> bool:
    if raw is None:
        return False
    if isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise InvalidSpec(f"{where}: {name} must be true or false, not {raw!r}")


def _str_map(raw: object, where: str, name: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{where}: {name} must be a map of names to values, not a {_kind(raw)}")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise InvalidSpec(f"{where}: {name} has an empty or invalid key {key!r}")
        if value is None:
            value = ""  # `KEY:` with nothing after it, as yaml.v2 reads into a string
        if not isinstance(value, str):
            raise InvalidSpec(f"{where}: {name}.{key} must be a single value, not a {_kind(value)}")
        out[key] = value
    return out


def _str_list(raw: object, where: str, name: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidSpec(
            f"{where}: {name} must be a list (one '- item' per line), not a {_kind(raw)}"
        )
    for item in raw:
        if not isinstance(item, str) or not item:
            raise InvalidSpec(f"{where}: {name} must hold plain values, found {item!r}")
    return tuple(raw)


def _resources(raw: object, where: str, name: str, warnings: list[str]) -> Resources | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{where}: {name} must be a map like {{memory: 128Mi, cpu: 100m}}")
    values: dict[str, str | None] = {"memory": None, "cpu": None}
    for key, value in raw.items():
        if key not in values:
            warnings.append(f"{where}: {name}.{key} is not supported by localfaas and is ignored")
            continue
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InvalidSpec(f"{where}: {name}.{key} must be a single value like 128Mi")
        if key == "memory" and not _MEMORY.match(value):
            raise InvalidSpec(
                f"{where}: {name}.memory {value!r} is not a memory quantity like 128Mi or 1Gi"
            )
        if key == "cpu" and not _CPU.match(value):
            raise InvalidSpec(
                f"{where}: {name}.cpu {value!r} is not a CPU quantity like 0.5 or 500m"
            )
        values[key] = value
    if values["memory"] is None and values["cpu"] is None:
        return None
    return Resources(memory=values["memory"], cpu=values["cpu"])


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _substitute(text: str, env: Mapping[str, str], unset: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${"
        name, op, default = match.group(2), match.group(3), match.group(4)
        value = env.get(name)
        if op is None:
            if value is None:
                unset.append(name)
            return value or ""
        if op.startswith(":"):  # `:-` / `:=`: unset or empty takes the default
            return value if value else default
        return value if value is not None else default

    return _SUBST.sub(replace, text)


class _StackLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that keeps plain scalars as strings (only null and merge keys are resolved)
    and rejects duplicate keys."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            try:
                key = self.construct_object(key_node, deep=True)
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)


_KEEP_TAGS = frozenset({"tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"})
_StackLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEEP_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StackLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InvalidSpec(f"{source}: invalid YAML{at}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{source}: invalid YAML: {exc}") from None
