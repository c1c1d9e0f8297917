from __future__ import annotations

from pathlib import Path

import pytest

from runtime.build.new import create_function, stack_entry
from runtime.errors import Conflict, InvalidSpec


def test_python3_http_function_gets_handler_and_requirements(tmp_path: Path) -> None:
    folder = create_function("hello", "python3-http", tmp_path)
    assert folder == tmp_path / "hello"
    assert sorted(p.name for p in folder.iterdir()) == ["handler.py", "requirements.txt"]
    assert "Hello from localfaas!" in (folder / "handler.py").read_text()
    assert (folder / "requirements.txt").read_text() == ""


def test_dockerfile_function_gets_a_sample_dockerfile(tmp_path: Path) -> None:
    folder = create_function("cat", "dockerfile", tmp_path / "deep" / "er")
    assert [p.name for p in folder.iterdir()] == ["Dockerfile"]


def test_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "handler.py").write_text("mine")
    with pytest.raises(Conflict, match="hello already exists"):
        create_function("hello", "python3-http", tmp_path)
    assert (tmp_path / "hello" / "handler.py").read_text() == "mine"


@pytest.mark.parametrize("name", ["Hello", "-x", "x-", "a_b", "a" * 64, ""])
def test_names_must_be_dns_labels(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidSpec, match="function name"):
        create_function(name, "python3-http", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_lang_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidSpec, match="unknown lang 'go'; choose one of: python3-http, dockerfile"
    ):
        create_function("hello", "go", tmp_path)


def test_stack_entry_matches_faas_cli_new() -> None:
    assert stack_entry("hello", "python3-http") == {
        "lang": "python3-http",
        "handler": "./hello",
        "image": "hello:latest",
    }
