from __future__ import annotations

import io

from runtime.build.progress import (
    BuildProgress,
    BuildStreamParser,
    ProgressPrinter,
    parse_step,
    render_bar,
    render_plain,
)


def test_parse_step() -> None:
    assert parse_step("Step 5/9 : COPY function/ /home/app/function/\n", "hello") == BuildProgress(
        5, 9, "COPY function/ /home/app/function/", "hello"
    )
    assert parse_step(" ---> Using cache") is None
    assert parse_step("Stepping 1/2 : no") is None


def test_render_plain() -> None:
    assert (
        render_plain(BuildProgress(5, 9, "COPY a b", "hello"))
        == "building hello: step 5/9: COPY a b"
    )
    assert render_plain(BuildProgress(0, 0, "downloading wheels", "hello")) == (
        "building hello: downloading wheels"
    )


def test_render_bar_fills_and_fits_the_width() -> None:
    line = render_bar(BuildProgress(5, 10, "COPY function/ /home/app/function/", "hello"), 200)
    assert line == "[##########----------] 5/10 building hello: COPY function/ /home/app/function/"
    assert render_bar(BuildProgress(10, 10, "USER app", "x"), 200).startswith("[" + "#" * 20 + "]")
    short = render_bar(BuildProgress(5, 10, "COPY " + "x" * 100, "hello"), 40)
    assert len(short) == 40 and short.endswith("...")


def test_printer_writes_plain_lines_when_piped() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=False)
    printer(BuildProgress(1, 2, "FROM base", "hello"))
    printer(BuildProgress(2, 2, "USER app", "hello"))
    printer.close()
    assert out.getvalue() == (
        "building hello: step 1/2: FROM base\nbuilding hello: step 2/2: USER app\n"
    )


def test_printer_redraws_one_line_per_image_on_a_tty() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=True)
    printer(BuildProgress(1, 2, "FROM base", "watchdog image"))
    printer(BuildProgress(2, 2, "USER app", "watchdog image"))
    printer(BuildProgress(1, 1, "FROM wd", "hello"))
    printer.close()
    lines = out.getvalue().split("\n")
    # One line per image, each redrawn in place; the finished watchdog bar stays.
    assert lines[0].split("\r\x1b[2K")[1:] == [
        "[##########----------] 1/2 building watchdog image: FROM base",
        "[####################] 2/2 building watchdog image: USER app",
    ]
    assert lines[1] == "\r\x1b[2K[####################] 1/1 building hello: FROM wd"
    assert lines[2] == ""


def chunks(*lines: str) -> list[dict[str, str]]:
    return [{"stream": line + "\n"} for line in lines]


CACHED_BUILD = chunks(
    "Step 1/4 : ARG WATCHDOG_IMAGE",
    "Step 2/4 : FROM ${WATCHDOG_IMAGE}",
    " ---> 0123456789ab",
    "Step 3/4 : COPY function/ /home/app/function/",
    " ---> Using cache",
    " ---> 1123456789ab",
    "Step 4/4 : ENV mode=python",
    " ---> Using cache",
    " ---> 2123456789ab",
    "Successfully built 2123456789ab",
    "Successfully tagged hello:latest",
)


def test_parser_reports_steps_and_a_fully_cached_build() -> None:
    parser = BuildStreamParser("hello")
    events = [p for chunk in CACHED_BUILD for p in parser.feed(chunk)]
    parser.feed({"aux": {"ID": "sha256:2123456789ab"}})
    parser.finish()
    assert [(p.step, p.total) for p in events] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(p.subject == "hello" for p in events)
    assert parser.uncached_steps == []
    assert parser.steps_total == 4
    assert parser.image_id == "sha256:2123456789ab"


def test_parser_lists_rebuilt_steps_but_not_from() -> None:
    parser = BuildStreamParser("hello")
    for chunk in chunks(
        "Step 1/3 : FROM base",
        " ---> 0123456789ab",
        "Step 2/3 : COPY function/ /home/app/function/",
        " ---> 3123456789ab",
        "Step 3/3 : RUN python3 -m compileall -q /home/app/function",
        " ---> Running in 4123456789ab",
        "Removing intermediate container 4123456789ab",
        " ---> 5123456789ab",
    ):
        parser.feed(chunk)
    parser.finish()
    assert parser.uncached_steps == [
        "COPY function/ /home/app/function/",
        "RUN python3 -m compileall -q /home/app/function",
    ]


def test_parser_handles_lines_split_across_chunks() -> None:
    parser = BuildStreamParser()
    got = parser.feed({"stream": "Step 1/2 : FR"}) + parser.feed({"stream": "OM base\n ---> 01"})
    got += parser.feed({"stream": "23456789ab\nStep 2/2 : USER app\n"})
    assert [p.message for p in got] == ["FROM base", "USER app"]


def test_failure_message_names_the_step_and_shows_its_output_without_colours() -> None:
    parser = BuildStreamParser("broken")
    for chunk in chunks(
        "Step 1/2 : FROM base",
        " ---> 0123456789ab",
        "Step 2/2 : RUN make && false",
        " ---> Running in 4123456789ab",
        "compiling...",
        "\x1b[91mmake: *** [all] Error 1",
        "\x1b[0mRemoving intermediate container 4123456789ab",
    ):
        parser.feed(chunk)
    message = parser.failure_message(
        "The command '/bin/sh -c make && false' returned a non-zero code: 1"
    )
    assert message == (
        "building broken failed at step 2/2 (RUN make && false): The command '/bin/sh -c make "
        "&& false' returned a non-zero code: 1\ncompiling...\nmake: *** [all] Error 1"
    )


def test_failure_before_any_step() -> None:
    assert BuildStreamParser("x").failure_message("no Dockerfile") == (
        "building x failed: no Dockerfile"
    )
