from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runtime.build.builder import FunctionBuild
from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec
from runtime.stack import (
    Provider,
    Resources,
    Stack,
    load_stack,
    parse_stack,
    substitute_env,
    to_build,
    to_deployment,
)

FULL = """\
version: 1.0
provider:
  name: openfaas
  gateway: ${GATEWAY:-http://127.0.0.1:8080}
functions:
  hello:
    lang: python3-http
    handler: ./hello
    image: ${REGISTRY:-local}/hello:${TAG:-latest}
    fprocess: python3 index.py
    environment:
      write_timeout: 10s
      max_inflight: 10
      debug: yes
      empty:
    environment_file:
      - env/common.yml
      - env/prod.yml
    secrets: [api-key]
    labels:
      com.openfaas.scale.min: 2
      canary: true
    annotations:
      topic: cron-function
      schedule: "*/5 * * * *"
    limits: {memory: 128Mi, cpu: 500m}
    requests:
      memory: 64Mi
    readonly_root_filesystem: true
    build_args:
      PIP_INDEX: https://example.invalid/simple
    constraints:
      - node.platform.os == linux
    namespace: staging
  cat:
    image: localfaas/cat:1
    skip_build: true
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def full_stack(tmp_path: Path) -> Path:
    write(tmp_path, "env/common.yml", "environment:\n  region: eu\n  write_timeout: 20s\n")
    write(tmp_path, "env/prod.yml", "environment:\n  region: us\n")
    return write(tmp_path, "stack.yml", FULL)


def test_full_stack(full_stack: Path, tmp_path: Path) -> None:
    stack = load_stack(full_stack, {"TAG": "0.2"})
    assert stack.version == "1.0"
    assert stack.provider == Provider(name="openfaas", gateway="http://127.0.0.1:8080")
    assert [fn.name for fn in stack.functions] == ["hello", "cat"]
    hello = stack.function("hello")
    assert hello.lang == "python3-http"
    assert hello.handler == tmp_path / "hello"
    assert hello.image == "local/hello:0.2"
    assert hello.fprocess == "python3 index.py"
    # Scalars stay text, as faas-cli reads them.
    assert hello.environment == {
        "write_timeout": "10s",
        "max_inflight": "10",
        "debug": "yes",
        "empty": "",
    }
    assert hello.environment_file == (tmp_path / "env/common.yml", tmp_path / "env/prod.yml")
    # Files override inline values; later files override earlier ones.
    assert hello.env_vars["write_timeout"] == "20s"
    assert hello.env_vars["region"] == "us"
    assert hello.secrets == ("api-key",)
    assert hello.labels == {"com.openfaas.scale.min": "2", "canary": "true"}
    assert hello.annotations["schedule"] == "*/5 * * * *"
    assert hello.limits == Resources(memory="128Mi", cpu="500m")
    assert hello.requests == Resources(memory="64Mi")
    assert hello.readonly_root_filesystem is True
    assert hello.build_args == {"PIP_INDEX": "https://example.invalid/simple"}
    assert hello.constraints == ("node.platform.os == linux",)
    assert hello.namespace == "staging"
    assert hello.buildable
    cat = stack.function("cat")
    assert cat.skip_build and not cat.buildable and cat.lang is None and cat.handler is None
    assert stack.warnings == ()


def test_to_deployment_full(full_stack: Path) -> None:
    stack = load_stack(full_stack, {"TAG": "0.2", "REGISTRY": "ghcr.io/me"})
    body = to_deployment(stack.function("hello"))
    assert body == {
        "service": "hello",
        "image": "ghcr.io/me/hello:0.2",
        "namespace": "staging",
        "envProcess": "python3 index.py",
        "envVars": {
            "write_timeout": "20s",
            "max_inflight": "10",
            "debug": "yes",
            "empty": "",
            "region": "us",
        },
        "constraints": ["node.platform.os == linux"],
        "secrets": ["api-key"],
        "labels": {"com.openfaas.scale.min": "2", "canary": "true"},
        "annotations": {"topic": "cron-function", "schedule": "*/5 * * * *"},
        "limits": {"memory": "128Mi", "cpu": "500m"},
        "requests": {"memory": "64Mi"},
        "readOnlyRootFilesystem": True,
    }
    # The gateway accepts what the stack produces.
    spec = FunctionSpec.from_json(body)
    assert spec.limits is not None and spec.limits.memory == "128Mi"


def test_to_deployment_omits_empty_optional_fields(full_stack: Path) -> None:
    stack = load_stack(full_stack, {})
    assert to_deployment(stack.function("cat")) == {"service": "cat", "image": "localfaas/cat:1"}


def test_to_build(full_stack: Path, tmp_path: Path) -> None:
    stack = load_stack(full_stack, {"TAG": "1"})
    assert to_build(stack.function("hello")) == FunctionBuild(
        name="hello",
        lang="python3-http",
        handler_dir=tmp_path / "hello",
        image="local/hello:1",
        build_args={"PIP_INDEX": "https://example.invalid/simple"},
    )
    with pytest.raises(InvalidSpec, match="skip_build"):
        to_build(stack.function("cat"))


def test_unset_variable_becomes_empty_with_a_warning() -> None:
    text = "functions:\n  a:\n    image: ${REGISTRY}a:1\n    skip_build: true\n"
    stack = parse_stack(text, source="s.yml", base_dir=Path("/"), env={})
    assert stack.functions[0].image == "a:1"
    assert stack.warnings == ("s.yml: variable REGISTRY is not set; substituted an empty string",)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("${A}", {}, ""),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:=d}", {}, "d"),
        ("${A:-http://h:8080/p}", {}, "http://h:8080/p"),
        ("x$${A}y", {"A": "1"}, "x${A}y"),
        ("$A and $$ stay", {"A": "1"}, "$A and $$ stay"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${not valid}", {}, "${not valid}"),
    ],
)
def test_substitute_env(text: str, env: dict[str, str], expected: str) -> None:
    assert substitute_env(text, env) == expected


def test_substitution_happens_before_yaml_parsing() -> None:
    text = "functions:\n  a:\n    image: x\n    skip_build: ${SKIP}\n"
    stack = parse_stack(text, source="s.yml", base_dir=Path("/"), env={"SKIP": "true"})
    assert stack.functions[0].skip_build


def test_dockerfile_spelling_is_normalised() -> None:
    text = "functions:\n  a:\n    lang: Dockerfile\n    handler: ./a\n    image: a:1\n"
    stack = parse_stack(text, source="s.yml", base_dir=Path("/srv"), env={})
    assert stack.functions[0].lang == "dockerfile"
    assert stack.functions[0].handler == Path("/srv/a")


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
    x-common: &common
      labels: {team: a}
    functions:
      a:
        <<: *common
        image: a:1
        skip_build: true
    """
    stack = parse_stack(textwrap.dedent(text), source="s.yml", base_dir=Path("/"), env={})
    assert stack.functions[0].labels == {"team": "a"}
    assert stack.warnings == ("s.yml: unknown top-level field 'x-common' ignored",)


def test_unknown_and_unsupported_fields_are_warnings() -> None:
    text = """\
    functions:
      a:
        image: a:1
        skip_build: true
        enviroment: {A: b}
        build_options: [dev]
        limits: {memory: 10Mi, nvidia.com/gpu: 1}
      b:
        lang: node18
        handler: ./b
        image: b:1
    """
    stack = parse_stack(textwrap.dedent(text), source="s.yml", base_dir=Path("/"), env={})
    assert stack.warnings == (
        "s.yml: function 'a': unknown field 'enviroment' ignored",
        "s.yml: function 'a': 'build_options' is not supported by localfaas and is ignored",
        "s.yml: function 'a': limits.nvidia.com/gpu is not supported by localfaas and is ignored",
        "s.yml: function 'b': lang 'node18' cannot be built by localfaas (it builds "
        "python3-http, dockerfile); set skip_build and a prebuilt image to deploy it",
    )


def test_select_by_glob_or_regex(full_stack: Path) -> None:
    stack = load_stack(full_stack, {})
    assert [fn.name for fn in stack.select(glob="h*")] == ["hello"]
    assert [fn.name for fn in stack.select(regex="a")] == ["cat"]
    assert stack.select() == stack.functions
    with pytest.raises(InvalidSpec, match="no function matches"):
        stack.select(glob="zzz")
    with pytest.raises(InvalidSpec, match="not both"):
        stack.select(glob="a", regex="b")
    with pytest.raises(InvalidSpec, match="no function 'nope' \\(it defines: hello, cat\\)"):
        stack.function("nope")


def fn_yaml(body: str, name: str = "fn") -> str:
    return "functions:\n  " + name + ":\n" + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            fn_yaml("lang: python3-http\nhandler: ./x\nimage: x:1\n", name="Hello"),
            "stack.yml: function 'Hello': name 'Hello' is invalid: use at most 63 lowercase "
            "letters, digits and '-', starting and ending with a letter or digit",
        ),
        (
            fn_yaml("image: x:1\n"),
            "stack.yml: function 'fn': lang is required unless image is set with skip_build",
        ),
        (
            fn_yaml("lang: python3-http\nhandler: ./x\n"),
            "stack.yml: function 'fn': image is required (the image name to build or deploy)",
        ),
        (
            fn_yaml("lang: python3-http\nimage: x:1\n"),
            "stack.yml: function 'fn': handler is required (the folder with the function's code)",
        ),
        (
            fn_yaml("image: my image\nskip_build: true\n"),
            "stack.yml: function 'fn': image 'my image' must not contain white space",
        ),
        (
            fn_yaml("image: x\nskip_build: maybe\n"),
            "stack.yml: function 'fn': skip_build must be true or false, not 'maybe'",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nreadonly_root_filesystem: [1]\n"),
            "stack.yml: function 'fn': readonly_root_filesystem must be true or false, not ['1']",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nenvironment: [A=b]\n"),
            "stack.yml: function 'fn': environment must be a map of names to values, not a list",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nenvironment:\n  A: {b: c}\n"),
            "stack.yml: function 'fn': environment.A must be a single value, not a map",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nsecrets: api-key\n"),
            "stack.yml: function 'fn': secrets must be a list (one '- item' per line), not a str",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nsecrets: [Bad_Secret]\n"),
            "stack.yml: function 'fn': secret name 'Bad_Secret' is invalid",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nnamespace: Prod\n"),
            "stack.yml: function 'fn': namespace 'Prod' is invalid",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nlimits: 128Mi\n"),
            "stack.yml: function 'fn': limits must be a map like {memory: 128Mi, cpu: 100m}",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nlimits: {memory: 12 MB}\n"),
            "stack.yml: function 'fn': limits.memory '12 MB' is not a memory quantity like "
            "128Mi or 1Gi",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nrequests: {cpu: half}\n"),
            "stack.yml: function 'fn': requests.cpu 'half' is not a CPU quantity like 0.5 or 500m",
        ),
        (
            fn_yaml("image: [x]\nskip_build: true\n"),
            "stack.yml: function 'fn': image must be a single value, not a list",
        ),
        (
            fn_yaml("image: x\nskip_build: true\nenvironment_file: [missing.yml]\n"),
            "stack.yml: function 'fn': environment_file 'missing.yml': file /base/missing.yml "
            "not found",
        ),
        ("functions:\n  fn:\n", "stack.yml: function 'fn': no settings"),
        ("functions:\n  fn: x:1\n", "stack.yml: function 'fn': expected a map of settings"),
        ("provider: {name: openfaas}\n", "stack.yml: no functions defined"),
        ("functions: [a, b]\n", "stack.yml: functions must be a map"),
        ("- a\n- b\n", "stack.yml: expected a map with 'provider' and 'functions'"),
        ("provider: openfaas\nfunctions: {}\n", "stack.yml: provider must be a map"),
        ("version: [1]\nfunctions: {}\n", 'stack.yml: version must be a string like "1.0"'),
        (
            "functions:\n  a:\n    image: x\n  a:\n    image: y\n",
            "stack.yml: invalid YAML at line 4, column 3: found duplicate key 'a'",
        ),
        (
            "functions:\n  a:\n    image: x\n   lang: y\n",
            "stack.yml: invalid YAML at line 4, column 4:",
        ),
    ],
)
def test_bad_stacks(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_stack(text, source="stack.yml", base_dir=Path("/base"), env={})
    assert str(info.value).startswith(message), str(info.value)


def test_bad_environment_file(tmp_path: Path) -> None:
    write(tmp_path, "env.yml", "environment: [a, b]\n")
    stack_file = write(
        tmp_path, "stack.yml", fn_yaml("image: x\nskip_build: true\nenvironment_file: [env.yml]\n")
    )
    with pytest.raises(InvalidSpec) as info:
        load_stack(stack_file, {})
    assert str(info.value) == (
        f"{stack_file}: function 'fn': environment_file 'env.yml': environment must be a map "
        "of names to values, not a list"
    )
    write(tmp_path, "env.yml", "environment:\n  a: [\n")
    with pytest.raises(InvalidSpec, match=r"environment_file 'env\.yml': invalid YAML at line"):
        load_stack(stack_file, {})


def test_missing_stack_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=r"nope\.yml: file not found"):
        load_stack(tmp_path / "nope.yml", {})


def test_stack_is_frozen(full_stack: Path) -> None:
    stack = load_stack(full_stack, {})
    assert isinstance(stack, Stack)
    with pytest.raises(AttributeError):
        stack.functions[0].image = "other"  # type: ignore[misc]
