"""Docker CLI arguments as found in scripts, Jenkins `args` and GitHub `options`.

Pure parsing: words in, a typed summary out. Nothing is executed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from dockmoat.ci.audit.mounts import Mount, parse_mount_flag, parse_short

# `docker run` flags that take no value; every other flag takes one (docker's own rule).
_BOOLEAN_FLAGS = frozenset(
    {
        "--privileged", "--rm", "-d", "--detach", "-i", "--interactive", "-t", "--tty",
        "--init", "--read-only", "--no-healthcheck", "-P", "--publish-all", "--sig-proxy",
        "--oom-kill-disable", "-q", "--quiet", "--disable-content-trust", "--help",
    }
)  # fmt: skip
_BOOLEAN_SHORT = frozenset("ditPq")
# Global options of the `docker` command itself, before the sub-command.
_GLOBAL_WITH_VALUE = frozenset(
    {"-H", "--host", "-c", "--context", "--config", "-l", "--log-level",
     "--tlscacert", "--tlscert", "--tlskey"}
)  # fmt: skip
_GLOBAL_BOOLEAN = frozenset({"--tls", "--tlsverify", "-D", "--debug"})


@dataclass
class RunArgs:
    """What a `docker run`/`create` (or an options string) asks for."""

    privileged: bool = False
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)
    network: str | None = None
    pid: str | None = None
    ipc: str | None = None
    ports: list[str] = field(default_factory=list)
    memory: bool = False
    cpus: bool = False
    pids: bool = False
    health: bool = False
    runtime: str | None = None
    image: str | None = None
    command: list[str] = field(default_factory=list)


def split_words(text: str) -> list[str]:
    """Shell-like words; an unbalanced quote falls back to plain whitespace splitting."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()


def _flag_value(words: list[str], i: int) -> tuple[str, str | None, int]:
    """(flag, value, next index) for the option at words[i]."""
    word = words[i]
    if word.startswith("--") and "=" in word:
        flag, inline = word.split("=", 1)
        return flag, inline, i + 1
    if word.startswith("--") or len(word) == 2:
        if word in _BOOLEAN_FLAGS:
            return word, None, i + 1
        following = words[i + 1] if i + 1 < len(words) else None
        return word, following, i + 2
    # Short flags: `-it`, `-v/src:/dst`, `-eFOO=1`.
    letters = word[1:]
    if all(ch in _BOOLEAN_SHORT for ch in letters):
        return word, None, i + 1
    return word[:2], word[2:], i + 1


def parse_run_options(words: list[str], line: int, *, expect_image: bool) -> RunArgs:
    """Options of `docker run`; with `expect_image`, the image and command follow them."""
    args = RunArgs()
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        flag, value, i = _flag_value(words, i)
        _apply(args, flag, value, line)
    if expect_image and i < len(words):
        args.image = words[i]
        args.command = words[i + 1 :]
    return args


def _apply(args: RunArgs, flag: str, value: str | None, line: int) -> None:
    if flag == "--privileged":
        args.privileged = value is None or value.lower() != "false"
    elif flag in ("-v", "--volume") and value:
        args.mounts.append(parse_short(value, line))
    elif flag == "--mount" and value:
        args.mounts.append(parse_mount_flag(value, line))
    elif flag in ("-e", "--env") and value:
        key, sep, val = value.partition("=")
        args.env[key] = val if sep else None
    elif flag in ("--network", "--net"):
        args.network = value
    elif flag == "--pid":
        args.pid = value
    elif flag == "--ipc":
        args.ipc = value
    elif flag in ("-p", "--publish") and value:
        args.ports.append(value)
    elif flag in ("-m", "--memory"):
        args.memory = True
    elif flag in ("--cpus", "--cpu-quota", "--cpuset-cpus"):
        args.cpus = True
    elif flag == "--pids-limit":
        args.pids = True
    elif flag == "--health-cmd":
        args.health = True
    elif flag == "--runtime":
        args.runtime = value


@dataclass(frozen=True)
class DockerCall:
    """One `docker ...` invocation found in a shell line."""

    host: str | None  # from -H/--host
    tls_verify: bool  # --tlsverify given
    subcommand: list[str]
    run: RunArgs | None  # set for run/create
    tags: list[str] = field(default_factory=list)  # `-t` of build, target of `tag`


@dataclass(frozen=True)
class ShellFacts:
    """What one shell line does that matters to the audit."""

    docker_calls: list[DockerCall]
    dockerd_words: list[list[str]]  # argument lists of dockerd invocations
    exported: dict[str, str]  # VAR=value assignments (export or prefix)
    commands: list[list[str]] = field(default_factory=list)  # every simple command's words
    built: list[str] = field(default_factory=list)  # images tagged by `docker build -t`


_OPERATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", "$(", "`", "{", "}"})
_PREFIXES = frozenset({"sudo", "exec", "time", "command", "nohup", "env", "export"})


def _simple_commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()`")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = line.split()
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _OPERATORS or set(token) <= set(";&|()`"):
            commands.append([])
        else:
            commands[-1].append(token.removeprefix("$("))
    return [c for c in commands if c]


_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
_MAX_NESTING = 4  # `sh -c "bash -c '...'"` a few levels deep, not forever


def scan_shell_line(line: str, line_no: int, depth: int = 0) -> ShellFacts:
    calls: list[DockerCall] = []
    daemons: list[list[str]] = []
    exported: dict[str, str] = {}
    commands: list[list[str]] = []
    nested: list[ShellFacts] = []
    for words in _simple_commands(line):
        i = 0
        while i < len(words):
            word = words[i]
            if "=" in word and not word.startswith("-") and word.split("=", 1)[0].isidentifier():
                key, value = word.split("=", 1)
                exported[key] = value
                i += 1
            elif word in _PREFIXES:
                i += 1
            else:
                break
        rest = words[i:]
        if not rest:
            continue
        commands.append(rest)
        program = rest[0].rsplit("/", 1)[-1]
        if program in _SHELLS and "-c" in rest[:-1] and depth < _MAX_NESTING:
            # `sh -c "SCRIPT"`: the script's commands are this line's commands.
            script = rest[rest.index("-c") + 1]
            nested.append(scan_shell_line(script, line_no, depth + 1))
        elif program == "docker":
            calls.append(_docker_call(rest[1:], line_no))
        elif program in ("dockerd", "dockerd-entrypoint.sh"):
            daemons.append(rest[1:])
    for inner in nested:
        calls.extend(inner.docker_calls)
        daemons.extend(inner.dockerd_words)
        exported.update(inner.exported)
        commands.extend(inner.commands)
    built = [tag for call in calls for tag in call.tags]
    return ShellFacts(
        docker_calls=calls,
        dockerd_words=daemons,
        exported=exported,
        commands=commands,
        built=built,
    )


def _docker_call(words: list[str], line_no: int) -> DockerCall:
    host = None
    tls_verify = False
    i = 0
    while i < len(words) and words[i].startswith("-"):
        flag, _, inline = words[i].partition("=")
        if flag in _GLOBAL_BOOLEAN:
            tls_verify = tls_verify or flag == "--tlsverify"
            i += 1
            continue
        if flag in _GLOBAL_WITH_VALUE:
            value = inline if inline else (words[i + 1] if i + 1 < len(words) else "")
            if flag in ("-H", "--host"):
                host = value
            i += 1 if inline else 2
            continue
        i += 1
    sub = words[i:]
    run = None
    if sub[:1] in (["run"], ["create"]):
        run = parse_run_options(sub[1:], line_no, expect_image=True)
    elif sub[:1] == ["container"] and sub[1:2] in (["run"], ["create"]):
        run = parse_run_options(sub[2:], line_no, expect_image=True)
    return DockerCall(
        host=host, tls_verify=tls_verify, subcommand=sub[:2], run=run, tags=_tags(sub)
    )


_BUILD_COMMANDS = (["build"], ["buildx", "build"], ["image", "build"], ["builder", "build"])


def _tags(sub: list[str]) -> list[str]:
    """Images this `docker ...` call makes locally: `build -t X`, `tag SRC X`."""
    if sub[:1] in (["tag"],) or sub[:2] == ["image", "tag"]:
        args = [w for w in sub[1 if sub[0] == "tag" else 2 :] if not w.startswith("-")]
        return args[1:2]
    if not any(sub[: len(b)] == b for b in _BUILD_COMMANDS):
        return []
    tags: list[str] = []
    for i, word in enumerate(sub):
        flag, sep, value = word.partition("=")
        if flag in ("-t", "--tag"):
            tags.append(value if sep else (sub[i + 1] if i + 1 < len(sub) else ""))
        elif word.startswith("-t") and len(word) > 2 and not word.startswith("--"):
            tags.append(word[2:])
    return [t for t in tags if t]


def join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join backslash-continued shell lines, keeping the first line's number."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.lstrip()
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        out.append((number, text))
    if pending is not None:
        out.append(pending)
    return out
