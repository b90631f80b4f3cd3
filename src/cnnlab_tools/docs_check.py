"""Every name the docs give exists: make targets, flags, params keys, paths and environment variables.

    python -m cnnlab_tools.docs_check               # README.md and docs/*.md here; exit 1, a line per problem
    python -m cnnlab_tools.docs_check --root PATH   # another project's

Run with the project's Python (its venv): the dvc and mlflow next to it answer for their commands, and its
installed packages for the environment variables they read. Names are read from markdown code only (inline
`code` spans, fenced blocks, and code spans in a block's `#` comments), never from prose, and checked:

- `make TARGET VAR=value`: a rule of the Makefile, and a variable it assigns (or reads).
- `python -m cnnlab_tools.MODULE ... --flag`, `python stages/X.py ... --flag`: the module or script exists and
  its source holds the flag. `dvc SUB ... --flag`, `mlflow SUB ... --flag`: `dvc SUB --help` succeeds and lists
  the flag (one --help per distinct subcommand, run side by side).
- params keys (`experiments.mnist_cnn.train.epochs`, `-S key=value`) under a top-level section of params.yaml:
  a key path of params.yaml, or one the params model (cnnlab.config) accepts there, such as an optional
  section params.yaml leaves out. A `<name>` (or `*`, or ALL-CAPS) segment stands for any key.
- paths (`reports/bench.md`, `src/cnnlab/config/`, `../shared/data`, `params.yaml`): in the tree (git's or on
  disk), an output of dvc.yaml's stages or under one, ignored by a .gitignore (generated locally), the value
  of a command's option or make variable (`--out DIR`: what it writes), the stem of files there
  (`reports/bench` of reports/bench.md), or, said of a place already named, the tail of a known path
  (`cnnlab/tracking/client.py`). A placeholder segment matches whatever is there: the part before it must
  exist. Links `[text](docs/x.md)` between the docs, likewise, and their `#anchor`s into a doc's headings. A
  word with a slash is a path when it starts with `.`/`..` or an entry of the project root, or ends in a file
  name with an extension; others (`train/<class>/` of a dataset folder, `img/s`) are not the project's.
- environment variables: CNNLAB_* in the project's src/, stages/, tests/ or Makefile; MLFLOW_*, DVC_*, AWS_*
  there or in the installed package that reads them (mlflow; dvc; botocore, aiobotocore, s3fs).

Text between `<!-- docs-check: off -->` and `<!-- docs-check: on -->` is not checked (change notes naming
what is gone). URLs, absolute paths, `~/...`, shell variables and paths outside the project other than
`../shared/...` (checked against the real ../shared when there is one) are not checked.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import difflib
import functools
import glob
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import yaml

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh", "text"}
OFF, ON = "<!-- docs-check: off -->", "<!-- docs-check: on -->"
# Top-level files a doc may name without a slash.
TOP_LEVEL_FILES = {
    "params.yaml",
    "dvc.yaml",
    "dvc.lock",
    "Makefile",
    "constraints.txt",
    "pyproject.toml",
    "README.md",
    ".gitignore",
    ".dvcignore",
    ".pre-commit-config.yaml",
    "mlflow.db",
}
# Written by a tool, not by a stage, and not ignored: committed after the tool writes it.
TOOL_WRITTEN = {"dvc.lock": "dvc repro"}
# dvc and mlflow commands whose first word names a group of subcommands (`dvc exp run`, `dvc remote modify`).
COMMAND_GROUPS = {
    "dvc": {"artifacts", "cache", "data", "exp", "experiments", "metrics", "params", "plots", "queue", "remote"}
    | {"stage", "studio"},
    "mlflow": {"artifacts", "db", "deployments", "experiments", "gateway", "models", "runs", "sagemaker"}
    | {"scorers", "traces"},
}
# Where each family of environment variables is read, besides the project's own code.
ENV_PACKAGES = {"MLFLOW": ("mlflow",), "DVC": ("dvc",), "AWS": ("botocore", "aiobotocore", "s3fs")}
ENV_NAME = re.compile(r"(?<![A-Za-z0-9_])((?:CNNLAB|MLFLOW|DVC|AWS)_[A-Z0-9_]*)(\*)?")
PROJECT_CODE = ("src", "stages", "tests")
PATH_TOKEN = re.compile(r"(?:[^\s\"'`()\[\];|&,{}<>]|\{[^{}\s]*\}|<[^<>\s]*>)+")
PATH_SEGMENT = re.compile(r"[\w.@+<>*{},~-]+")
EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
FILE_EXTENSIONS = {"py", "md", "json", "yaml", "yml", "toml", "txt", "png", "pt", "pth", "csv", "lock", "db", "sh"}
PLACEHOLDER = re.compile(r"<[^<>]*>|\*|\.\.\.|\{|\$|(?<![A-Za-z])[A-Z][A-Z0-9_]+(?![a-z])")
KEY_SEGMENT = r"(?:[\w-]+|<[^<>\s]+>|\*)(?:\[\d+\])?"
MODULE_LIKE = re.compile(r"[A-Za-z_][\w.]*")
WORD_LIKE = re.compile(r"[\w./@+-]+")
SUBCOMMAND = re.compile(r"[a-z][a-z0-9-]*")
MAKE_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[:?+!]?=")
PYTHON = re.compile(r"python(?:\d(?:\.\d+)?)?")
MAKE_OTHER_MAKEFILE = {"-C", "-f", "--directory", "--file", "--makefile"}
MAKE_FILE_OPTIONS = {"-o", "-W", "--old-file", "--assume-old", "--what-if", "--new-file", "--assume-new"}
MAKE_VALUE_OPTIONS = {"-I", "--include-dir", "-j", "--jobs", "-l", "--load-average", "--max-load"}
SKIPPED_BEFORE_PROGRAM = {"export", "env", "sudo", "time", "nohup", "exec", "do", "then", "else", "!", "{"}


@dataclass(frozen=True)
class Mention:
    """A name a piece of code gives: `at` is its offset in that code."""

    kind: str  # make-target, make-variable, module, flag, command, command-flag, key, path, written, env, link
    name: str
    at: int
    context: str = ""  # a flag's command (`python -m cnnlab_tools.bench`, `dvc exp run`)


@dataclass(frozen=True)
class Code:
    line: int  # of its first character in the doc
    text: str
    shell: bool  # commands are read from it (shell blocks and inline spans)


@dataclass(frozen=True)
class Located:
    file: str
    line: int
    mention: Mention


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    what: str  # e.g. "make target"
    name: str
    why: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what} `{self.name}` {self.why}; {self.fix}"


@dataclass(frozen=True)
class ParamsModel:
    """The params model of cnnlab.config: the whole file's type, and each dataset kind's (acquire, prepare)."""

    params: Any
    dataset_kinds: dict[str, tuple[Any, Any]]


@dataclass(frozen=True)
class Project:
    """What a project has that its docs may name."""

    root: Path
    make_targets: frozenset[str]
    make_variables: frozenset[str]
    params: dict[str, Any]
    model: ParamsModel | None
    tracked: frozenset[str]  # git's files and their directories
    outputs: frozenset[str]  # dvc.yaml's outs, metrics and plots
    ignores: tuple[tuple[str, str], ...]  # (directory of the .gitignore, pattern)
    env_names: frozenset[str]  # CNNLAB_ and others, as the project's code and Makefile spell them
    shared: Path | None  # ../shared, where it exists

    @functools.cached_property
    def sections(self) -> frozenset[str]:
        fields = set(_hints(self.model.params)) if self.model else set()
        return frozenset(set(self.params) | fields)

    @functools.cached_property
    def top_level(self) -> frozenset[str]:
        """The project root's entries: tracked, on disk, outputs' and ignored ones."""
        names = {path.split("/")[0] for path in self.tracked | self.outputs}
        names |= {p.name for p in self.root.iterdir()} if self.root.is_dir() else set()
        for base, pattern in self.ignores:
            literal = pattern.strip("/")
            if not base and not any(c in literal for c in "*?[!/"):
                names.add(literal)
        return frozenset(names)

    @functools.cached_property
    def known(self) -> frozenset[str]:
        """Every known path and directory, for a path given as the tail of one."""
        return self.tracked | _with_parents(self.outputs)

    @classmethod
    def of(cls, root: Path) -> Project:
        root = root.resolve()
        makefile = _read(root / "Makefile")
        params = yaml.safe_load(_read(root / "params.yaml")) or {}
        tracked = tracked_files(root)
        ignore_files = {".gitignore", *(p for p in tracked if p.endswith("/.gitignore"))}
        ignores = tuple(
            (os.path.dirname(name), pattern)
            for name in sorted(ignore_files)
            for pattern in gitignore_patterns(_read(root / name))
        )
        code = [root / "Makefile", *(p for d in PROJECT_CODE for p in sorted((root / d).rglob("*.py")))]
        env_names = {m.group(1) for path in code for m in ENV_NAME.finditer(_read(path))}
        shared = root.parent / "shared"
        return cls(
            root=root,
            make_targets=frozenset(makefile_targets(makefile)),
            make_variables=frozenset(makefile_variables(makefile)),
            params=params if isinstance(params, dict) else {},
            model=params_model(),
            tracked=_with_parents(tracked),
            outputs=frozenset(dvc_outputs(root)),
            ignores=ignores,
            env_names=frozenset(env_names),
            shared=shared if shared.is_dir() else None,
        )


# --- Reading markdown -------------------------------------------------------------------------------------


def code_in(markdown: str) -> tuple[list[Code], list[tuple[int, str]]]:
    """A doc's code, fenced blocks and inline spans with the line each starts on, and its links (line, target)."""
    lines = markdown.split("\n")
    prose = list(lines)
    codes: list[Code] = []
    fence: tuple[str, int, str] | None = None  # (marker, indent, language)
    block: list[str] = []
    start = 0
    off = False
    for number, line in enumerate(lines, 1):
        if OFF in line or ON in line:
            off = OFF in line
            prose[number - 1] = ""
            continue
        stripped = line.lstrip()
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if off:
                prose[number - 1] = ""
            elif opening:
                fence = (opening.group(1), len(line) - len(stripped), opening.group(2).lower())
                block, start = [], number + 1
                prose[number - 1] = ""
            continue
        prose[number - 1] = ""
        marker, indent, language = fence
        closing = stripped.rstrip()
        if set(closing) == {marker[0]} and len(closing) >= len(marker):
            text = "\n".join(block)
            shell = language in SHELL_LANGUAGES
            codes.append(Code(start, text, shell))
            if shell:
                codes += [Code(start + text.count("\n", 0, at), span, True) for at, span in comment_spans(text)]
            fence = None
            continue
        content = line[indent:] if line[:indent].strip() == "" else stripped
        block.append(content[2:] if language == "console" and content.startswith("$ ") else content)
    text = "\n".join(prose)
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line_of(offset: int) -> int:
        return bisect.bisect_right(newlines, offset - 1) + 1

    spans = list(inline_spans(text))
    codes += [Code(line_of(at), span, True) for at, span in spans]
    bare = text
    for at, span in spans:  # links inside code are not links
        bare = bare[:at] + " " * len(span) + bare[at + len(span) :]
    inline_links = re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", bare)
    reference_links = re.finditer(r"(?m)^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", bare)
    links = [(line_of(m.start()), m.group(1)) for m in (*inline_links, *reference_links)]
    return codes, links


def heading_anchors(markdown: str) -> set[str]:
    """The anchors of a doc's headings, as GitHub makes them (`## CIFAR-10's sources` is #cifar-10s-sources),
    and of its `<a id=...>` tags."""
    anchors: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", markdown))
    fence = ""
    for line in markdown.splitlines():
        stripped = line.strip()
        marker = re.match(r"`{3,}|~{3,}", stripped)
        if marker and not fence:
            fence = marker.group(0)
        elif fence:
            fence = "" if set(stripped) == {fence[0]} and len(stripped) >= len(fence) else fence
        elif heading := re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).lower()
            slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            number = 1
            unique = slug
            while unique in anchors:
                unique = f"{slug}-{number}"
                number += 1
            anchors.add(unique)
    return anchors


def inline_spans(text: str) -> Iterator[tuple[int, str]]:
    """Inline code spans (offset, content): a run of backticks up to the next run as long, within a paragraph."""
    for m in re.finditer(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", text, re.DOTALL):
        content = m.group(2)
        if content.startswith(" ") and content.endswith(" ") and content.strip():
            yield m.start(2) + 1, content[1:-1]
        else:
            yield m.start(2), content


def comment_spans(block: str) -> list[tuple[int, str]]:
    """Inline code spans in a shell block's `#` comments (offset in the block, content)."""
    _, comments = shell_words(block)
    return [(at + inner, span) for at, comment in comments for inner, span in inline_spans(comment)]


# --- Reading shell ----------------------------------------------------------------------------------------

Word = tuple[int, str]  # offset, text without its quotes


def shell_words(code: str) -> tuple[list[list[Word]], list[Word]]:
    """Simple commands (their words) and `#` comments (offset of the text after #) of shell text.

    Commands end at a newline (not after a backslash), `;`, `&&`, `|`, `(`, `)` and backticks; `$(` starts one.
    """
    commands: list[list[Word]] = [[]]
    comments: list[Word] = []
    word: list[str] | None = None
    start = i = 0

    def flush() -> None:
        nonlocal word
        if word is not None:
            commands[-1].append((start, "".join(word)))
            word = None

    while i < len(code):
        c = code[i]
        if c == "\\" and code.startswith("\n", i + 1):
            flush()
            i += 2
        elif c in " \t\r":
            flush()
            i += 1
        elif c == "#" and word is None:
            end = code.find("\n", i)
            end = len(code) if end < 0 else end
            comments.append((i + 1, code[i + 1 : end]))
            i = end
        elif c in "'\"":
            end = code.find(c, i + 1)
            end = len(code) if end < 0 else end
            if word is None:
                word, start = [], i
            word.append(code[i + 1 : end])
            i = end + 1
        elif c in ";|&()`\n" or (c == "$" and code.startswith("(", i + 1)):
            flush()
            commands.append([])
            i += 2 if c == "$" else 1
        else:
            if word is None:
                word, start = [], i
            word.append(c)
            i += 1
    flush()
    return [command for command in commands if command], comments


def command_mentions(words: list[Word]) -> list[Mention]:
    """The names one simple command gives: make's targets and variables, a project module's flags, a dvc or
    mlflow subcommand and its flags, and the paths its options take (what it writes)."""
    i = 0
    while i < len(words) and (words[i][1] in SKIPPED_BEFORE_PROGRAM or MAKE_VARIABLE.match(words[i][1])):
        if words[i][1] == "export":
            return []
        i += 1
    if i == len(words):
        return []
    program, args = words[i][1].rsplit("/", 1)[-1], words[i + 1 :]
    if program in ("make", "gmake"):
        return make_mentions(args)
    if PYTHON.fullmatch(program):
        return python_mentions(args)
    if program in COMMAND_GROUPS:
        return tool_mentions(program, args)
    return []


def make_mentions(args: list[Word]) -> list[Mention]:
    found: list[Mention] = []
    i = 0
    while i < len(args):
        at, word = args[i]
        following = args[i + 1][1] if i + 1 < len(args) else ""
        if word in MAKE_OTHER_MAKEFILE or re.match(r"-[Cf].", word):
            return []  # another makefile's names
        if word in MAKE_FILE_OPTIONS and following:
            if _plain(following):
                found.append(Mention("make-target", following, args[i + 1][0]))
            i += 2
            continue
        if word in MAKE_VALUE_OPTIONS and following and not following.startswith("-"):
            i += 2 if word in ("-I", "--include-dir") or following.isdigit() else 1
            continue
        variable = MAKE_VARIABLE.match(word)
        if variable:
            found.append(Mention("make-variable", variable.group(1), at))
            found += _written(word[variable.end() :], at)
        elif not word.startswith("-") and _plain(word):
            found.append(Mention("make-target", word, at))
        i += 1
    return found


def python_mentions(args: list[Word]) -> list[Mention]:
    for i, (at, word) in enumerate(args):
        if word == "-c":
            return []
        if word == "-m" and i + 1 < len(args):
            module = args[i + 1][1]
            if not MODULE_LIKE.fullmatch(module):
                return []
            return [Mention("module", module, args[i + 1][0]), *option_mentions(args[i + 2 :], f"python -m {module}")]
        if not word.startswith("-"):
            if not word.endswith(".py") or not _plain(word):
                return []
            return [Mention("module", word, at), *option_mentions(args[i + 1 :], f"python {word}")]
    return []


def tool_mentions(tool: str, args: list[Word]) -> list[Mention]:
    i = 0
    while i < len(args) and args[i][1].startswith("-"):  # global options: -v, -q, --cd DIR
        i += 2 if args[i][1] == "--cd" else 1
    if i == len(args) or not SUBCOMMAND.fullmatch(args[i][1]):
        return []
    at, words = args[i][0], [tool, args[i][1]]
    i += 1
    if words[1] in COMMAND_GROUPS[tool] and i < len(args) and SUBCOMMAND.fullmatch(args[i][1]):
        words.append(args[i][1])
        i += 1
    command = " ".join(words)
    return [Mention("command", command, at), *option_mentions(args[i:], command)]


def option_mentions(args: list[Word], command: str) -> list[Mention]:
    """A command's long flags, and the paths given as their values (what the command writes or reads)."""
    found: list[Mention] = []
    for i, (at, word) in enumerate(args):
        if word == "--":
            break
        if not word.startswith("--") or len(word) == 2 or not re.fullmatch(r"--[A-Za-z0-9][\w-]*(=.*)?", word):
            continue
        flag, _, value = word.partition("=")
        kind = "flag" if command.startswith("python") else "command-flag"
        found.append(Mention(kind, flag, at, command))
        if not value and i + 1 < len(args) and not args[i + 1][1].startswith("-"):
            value = args[i + 1][1]
        found += _written(value, at)
    return found


def _written(value: str, at: int) -> list[Mention]:
    """An option's or a make variable's value, when a project path: what the command writes (or reads)."""
    return [
        Mention("written", path.rstrip("/"), at)
        for path in _expand(value.strip())
        if "/" in path and re.fullmatch(r"[^\s/~$][^\s$]*", path) and "://" not in path
    ]


# --- Names in any code ------------------------------------------------------------------------------------


def key_mentions(code: str, sections: Iterable[str]) -> list[Mention]:
    """Dotted params keys under one of `sections` (`experiments.<name>.train.epochs`, `-S key=value`'s key)."""
    names = "|".join(re.escape(s) for s in sorted(sections, key=len, reverse=True))
    if not names:
        return []
    pattern = rf"(?<![\w.$/{{@-])(?:{names})(?:\.{KEY_SEGMENT})+(?![\w/(])"
    found = []
    for m in re.finditer(pattern, code):
        key = m.group(0)
        if key.rsplit(".", 1)[-1] in FILE_EXTENSIONS:  # report.py, datasets.py: files, not keys
            continue
        found.append(Mention("key", key, m.start()))
    return found


def env_mentions(code: str) -> list[Mention]:
    """CNNLAB_, MLFLOW_, DVC_ and AWS_ variables; a name ending in `_` or `*` is a prefix (MLFLOW_HTTP_REQUEST_*)."""
    return [Mention("env", m.group(1) + (m.group(2) or ""), m.start()) for m in ENV_NAME.finditer(code)]


def path_mentions(code: str, top_level: frozenset[str]) -> list[Mention]:
    """Words that name a project path (see the module's docstring for which do)."""
    found = []
    for m in PATH_TOKEN.finditer(code):
        offset = m.start()
        for piece in m.group(0).split("="):
            path = piece.rstrip(".:")
            if ":" in path:
                path = "" if ":/" in path else path.split(":")[0]
            if is_path(path, top_level):
                found.append(Mention("path", path, offset))
            offset += len(piece) + 1
    return found


def is_path(word: str, top_level: frozenset[str]) -> bool:
    if "/" not in word:
        return word in TOP_LEVEL_FILES
    if word.startswith(("/", "~", "-", "@", "$")) or "$" in word or "//" in word:
        return False
    if word.count("<") != word.count(">") or not re.search(r"[A-Za-z]", word):
        return False
    segments = word.rstrip("/").split("/")
    if not all(PATH_SEGMENT.fullmatch(s) for s in segments):
        return False
    return segments[0] in (".", "..") or segments[0] in top_level or bool(EXTENSION.search(segments[-1]))


def mentions_in(code: Code, sections: frozenset[str], top_level: frozenset[str]) -> list[Mention]:
    found = [*key_mentions(code.text, sections), *env_mentions(code.text), *path_mentions(code.text, top_level)]
    if code.shell:
        commands, _ = shell_words(code.text)
        found += [mention for command in commands for mention in command_mentions(command)]
    return found


# --- What a project has -----------------------------------------------------------------------------------


def makefile_targets(makefile: str) -> set[str]:
    """The Makefile's rule names (`name:` lines, several names to a rule) and its .PHONY ones."""
    targets: set[str] = set()
    for line in makefile.splitlines():
        rule = re.match(r"([^\s#=:][^=:#]*?)\s*::?(?!=)(.*)", line)
        if not rule or line.startswith("\t"):
            continue
        names = rule.group(1).split()
        if names == [".PHONY"]:
            targets |= set(rule.group(2).split("#")[0].split())
        else:
            targets |= set(names)
    return {t for t in targets if not t.startswith(".") or "/" in t}


def makefile_variables(makefile: str) -> set[str]:
    """Variables the Makefile assigns (`VAR ?=`, `:=`, `=`, `+=`, exported or not) or reads (`$(VAR)`)."""
    assigned = r"(?m)^(?:export\s+|override\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?=|::?=|\+=|!=|=)"
    read = r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]"
    return set(re.findall(assigned, makefile)) | set(re.findall(read, makefile))


def tracked_files(root: Path) -> list[str]:
    try:
        done = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True)
    except OSError:  # no git
        return []
    return [p for p in done.stdout.split("\0") if p] if done.returncode == 0 else []


def dvc_outputs(root: Path) -> set[str]:
    """Every out, metric and plot of dvc.yaml's stages, as DVC resolves them (foreach entries included)."""
    if not (root / "dvc.yaml").is_file():
        return set()
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            return {out.def_path.rstrip("/") for stage in repo.index.stages for out in stage.outs}
    except Exception:  # no DVC here, or a dvc.yaml it cannot read: the literal paths, up to an interpolation
        stages = (yaml.safe_load(_read(root / "dvc.yaml")) or {}).get("stages") or {}
        found = set()
        for stage in stages.values():
            body = stage.get("do", stage) if isinstance(stage, dict) else {}
            for section in ("outs", "metrics", "plots"):
                for out in body.get(section) or []:
                    path = next(iter(out)) if isinstance(out, dict) else str(out)
                    found.add(path.split("${")[0].rstrip("/"))
        return {path for path in found if path}


def gitignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def git_ignores(root: Path, path: str) -> bool:
    """Whether git ignores `path` or a directory above it, by the project's .gitignore files: git decides, for a
    path that does not exist yet too (`--no-index`), as a file or as a directory (`dir/` patterns). Without git
    nothing counts as ignored."""
    as_either = [path, path.rstrip("/") + "/"]
    try:
        done = subprocess.run(["git", "check-ignore", "--no-index", "--", *as_either], cwd=root, capture_output=True)
    except OSError:  # no git
        return False
    return done.returncode == 0


def params_model() -> ParamsModel | None:
    """cnnlab.config's model of params.yaml, when cnnlab imports here."""
    try:
        params = importlib.import_module("cnnlab.config.params")
        datasets = importlib.import_module("cnnlab.config.datasets")
    except ImportError:
        return None
    return ParamsModel(params.Params, dict(datasets.DATASET_KINDS))


# --- Params keys ------------------------------------------------------------------------------------------

MISSING = object()
State = tuple[Any, tuple[Any, ...]]  # a params.yaml node (or MISSING) and the model's types for it


def key_states(key: str, params: dict[str, Any], model: ParamsModel | None) -> list[State]:
    """Where `key` leads in params.yaml and the model together; empty when nowhere."""
    states: list[State] = [(params, (model.params,) if model else ())]
    for raw in key.split("."):
        segment, indexed = re.subn(r"\[\d+\]", "", raw)
        states = [new for state in states for new in _step(state, segment, model)]
        if indexed:  # `comparisons[0]`: an item of the list
            states = [
                (item, tuple(a for tp in types_ for a in _args(tp, tuple)))
                for node, types_ in states
                for item in (node if isinstance(node, list) else [MISSING])
            ]
    return states


def key_children(states: list[State]) -> set[str]:
    """The keys that may follow, for a hint."""
    children: set[str] = set()
    for node, types_ in states:
        children |= set(node) if isinstance(node, dict) else set()
        for tp in types_:
            children |= set(_hints(tp))
    return children


def _step(state: State, segment: str, model: ParamsModel | None) -> list[State]:
    node, types_ = state
    wild = bool(PLACEHOLDER.search(segment))
    found: list[State] = []
    if isinstance(node, dict):
        keys = [k for k in node if wild or str(k) == segment]
        found += [(node[k], _child_types(types_, str(k), node, model, named=True)) for k in keys]
    if not found:  # a key params.yaml leaves out: the model's, if it accepts one there
        children = _child_types(types_, segment, node, model, named=False, wild=wild)
        if children:
            found.append((MISSING, children))
    return found


def _child_types(
    types_: tuple[Any, ...],
    key: str,
    node: Any,
    model: ParamsModel | None,
    named: bool,
    wild: bool = False,
) -> tuple[Any, ...]:
    """The model's types for `key` under `types_`. A mapping of named entries (experiments:) accepts only the
    names params.yaml holds (`named`); the acquire: and prepare: of a dataset are its kind's."""
    found: list[Any] = []
    for tp in types_:
        for option in _options(tp):
            if getattr(option, "__name__", "") == "DatasetConfig" and key in ("acquire", "prepare") and model:
                kind = node.get("kind") if isinstance(node, dict) else None
                kinds = [kind] if kind in model.dataset_kinds else list(model.dataset_kinds)
                found += [model.dataset_kinds[k][key == "prepare"] for k in kinds]
            elif dataclasses.is_dataclass(option):
                hints = _hints(option)
                found += list(hints.values()) if wild else [hints[key]] if key in hints else []
            elif get_origin(option) is dict:
                value = get_args(option)[1]
                if named or wild or not any(dataclasses.is_dataclass(o) for o in _options(value)):
                    found.append(value)
    return tuple(found)


def _options(tp: Any) -> list[Any]:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        return [o for arg in get_args(tp) for o in _options(arg)]
    return [tp]


def _args(tp: Any, origin: Any) -> tuple[Any, ...]:
    return tuple(a for o in _options(tp) if get_origin(o) is origin for a in get_args(o) if a is not Ellipsis)


def _hints(tp: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(tp):
        return {}
    hints = get_type_hints(tp, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(tp) if f.init}


# --- Checking ---------------------------------------------------------------------------------------------


def doc_mentions(file: str, markdown: str, project: Project) -> list[Located]:
    codes, links = code_in(markdown)
    sections, top_level = project.sections, project.top_level
    found = [
        Located(file, code.line + code.text.count("\n", 0, mention.at), mention)
        for code in codes
        for mention in mentions_in(code, sections, top_level)
    ]
    for line, target in links:
        if re.match(r"[a-z][a-z0-9+.-]*:|[/~]", target):
            continue  # a URL, a mail address, an absolute path: not checked
        path, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(file), path)).replace(os.sep, "/") if path else file
        found.append(Located(file, line, Mention("link", path + (f"#{anchor}" if anchor else ""), 0)))
    return found


def path_exists(path: str, project: Project, written: Iterable[str] = ()) -> bool:
    """Whether a project path a doc names is there, or is what the pipeline, a tool or a command makes."""
    variants = _expand(path)
    if len(variants) > 1:
        return all(path_exists(variant, project, written) for variant in variants)
    path = os.path.normpath(path).replace(os.sep, "/") if path.strip("/") else path
    if path.startswith("../"):
        shared = project.shared
        if shared is None or not (path + "/").startswith("../shared/"):
            return True  # outside the project, or no ../shared here: not checked

        def there(p: str) -> bool:
            return not p or (shared / p).exists()

        rest = path[len("../shared/") :]
        return there(rest) or _fixed(rest, there)
    return _found(path, project, set(written)) or _fixed(path, lambda p: _found(p, project, set(written)))


def _found(path: str, project: Project, written: set[str]) -> bool:
    if not path or path == "." or path in project.tracked or path in TOOL_WRITTEN or (project.root / path).exists():
        return True
    outputs = project.outputs | written
    if any(path == out or path.startswith(out + "/") or out.startswith(path + "/") for out in outputs):
        return True
    if git_ignores(project.root, path):
        return True
    # the stem of files there (`--out reports/bench`), or the tail of a known path (`config/` of src/cnnlab/config/)
    where = project.root / path
    if where.parent.is_dir() and any(where.parent.glob(glob.escape(where.name) + ".*")):
        return True
    return any(known.endswith("/" + path) or known.startswith(path + ".") for known in project.known)


def _fixed(path: str, exists: Callable[[str], bool]) -> bool:
    """A path with placeholder segments: the part before the first must exist (nothing to check if it is first)."""
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if PLACEHOLDER.search(segment):
            return i == 0 or exists("/".join(segments[:i]))
    return False


def check_mentions(
    mentions: list[Located],
    project: Project,
    command_flags: Callable[[str], frozenset[str] | None],
    package_env: Callable[[str], frozenset[str] | None],
    anchors: dict[str, set[str]] | None = None,
) -> list[Problem]:
    """The problems of `mentions`: `command_flags("dvc exp run")` is the flags its --help lists (None: no such
    command; empty: not checked here), `package_env("MLFLOW")` the names its packages read (None: not here),
    `anchors` each doc's heading anchors (a link's `#anchor` into another file is not checked)."""
    written = {m.mention.name for m in mentions if m.mention.kind == "written"}
    problems: list[Problem] = []
    for found in mentions:
        problem = _problem(found.mention, project, written, command_flags, package_env, anchors or {})
        if problem:
            what, why, fix = problem
            problems.append(Problem(found.file, found.line, what, found.mention.name, why, fix))
    unique = {(p.file, p.line, p.what, p.name): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.file, p.line, p.name))


def _problem(
    mention: Mention,
    project: Project,
    written: set[str],
    command_flags: Callable[[str], frozenset[str] | None],
    package_env: Callable[[str], frozenset[str] | None],
    anchors: dict[str, set[str]],
) -> tuple[str, str, str] | None:
    name, kind = mention.name, mention.kind
    if kind == "make-target" and name not in project.make_targets:
        return "make target", "is not a rule of the Makefile", _hint(name, project.make_targets, "add the rule")
    if kind == "make-variable" and name not in project.make_variables:
        return "make variable", "is not assigned in the Makefile", _hint(name, project.make_variables, "assign it")
    if kind == "module" and _module_sources(name, project.root) is None:
        modules = _project_modules(project.root)
        return "module", "is not in the project", _hint(name, modules, "fix the name")
    if kind == "flag":
        target = mention.context.removeprefix("python -m ").removeprefix("python ")
        sources = _module_sources(target, project.root)
        if sources:
            text = "\n".join(_read(p) for p in sources)
            if name != "--help" and not re.search(re.escape(name) + r"(?![\w-])", text):
                flags = set(re.findall(r"[\"'](--[\w-]+)[\"']", text))
                where = ", ".join(str(p.relative_to(project.root)) for p in sources[:1])
                return f"flag of `{mention.context}`:", f"is not in {where}", _hint(name, flags, "fix the flag")
    if kind == "command" and command_flags(name) is None:
        return "command", f"does not exist (`{name} --help` fails)", f"see `{name.rsplit(' ', 1)[0]} --help`"
    if kind == "command-flag":
        listed = command_flags(mention.context)
        if listed and name != "--help" and name not in listed:
            return f"flag of `{mention.context}`:", "is not in its --help", _hint(name, listed, "fix the flag")
    if kind == "key":
        states = key_states(name, project.params, project.model)
        if not states:
            return "params key", "is in neither params.yaml nor its model (cnnlab.config)", _key_hint(name, project)
    if kind == "path" and not path_exists(name, project, written):
        return "path", "is nowhere: not in the tree, an output of dvc.yaml or ignored as generated", "fix the path"
    if kind == "link":
        path, _, anchor = name.partition("#")
        if not path_exists(path, project, written):
            return "link", "leads nowhere: no such file or directory", "fix the link"
        if anchor and path in anchors and anchor not in anchors[path]:
            return "link", f"leads to no heading of {path}", _hint(anchor, anchors[path], "fix the anchor")
    if kind == "env":
        return _env_problem(name, project, package_env)
    return None


def _env_problem(
    name: str, project: Project, package_env: Callable[[str], frozenset[str] | None]
) -> tuple[str, str, str] | None:
    prefix = name.rstrip("*")
    family = prefix.split("_", 1)[0]
    exact = not (name.endswith("*") or prefix.endswith("_"))
    known = set(project.env_names)
    if family != "CNNLAB":
        names = package_env(family)
        if names is None:
            return None  # its package is not installed here: not checked
        known |= names
    if (prefix in known) if exact else any(k.startswith(prefix) for k in known):
        return None
    where = "src/, stages/, tests/ or the Makefile"
    if family != "CNNLAB":
        where += " nor in " + ", ".join(ENV_PACKAGES[family])
    return "environment variable", f"is read nowhere in {where}", _hint(prefix, known, "fix the name")


def _key_hint(key: str, project: Project) -> str:
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        states = key_states(".".join(parts[:i]), project.params, project.model)
        if states:
            children = key_children(states)
            return _hint(parts[i], children, f"`{'.'.join(parts[:i])}` has {', '.join(sorted(children)) or 'no keys'}")
    return f"top-level sections: {', '.join(sorted(project.sections))}"


def _hint(name: str, known: Iterable[str], otherwise: str) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean `{close[0]}`?" if close else otherwise


def _module_sources(name: str, root: Path) -> list[Path] | None:
    """The source files of a module (`cnnlab_tools.bench`) or script (`stages/train.py`); a package's all.

    A module outside the project (`python -m pytest`) has an empty list: nothing to check there."""
    if name.endswith(".py"):
        return [root / name] if (root / name).is_file() else None
    if not (root / "src" / name.split(".")[0]).is_dir():
        return []
    base = root / "src" / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return [base.with_suffix(".py")]
    if (base / "__main__.py").is_file():
        return [base / "__main__.py", *sorted(p for p in base.rglob("*.py") if p.name != "__main__.py")]
    return None


def _project_modules(root: Path) -> set[str]:
    src = root / "src"
    return {".".join(p.relative_to(src).with_suffix("").parts) for p in src.rglob("*.py")} if src.is_dir() else set()


# --- The tools next to this Python ------------------------------------------------------------------------


def help_flags(commands: Iterable[str], bin_dir: Path) -> dict[str, frozenset[str] | None]:
    """`COMMAND --help`'s long flags for each command (`dvc exp run`), run side by side: None where it fails,
    empty where the tool is not installed next to this Python."""

    def flags(command: str) -> frozenset[str] | None:
        tool, *rest = command.split()
        if not (bin_dir / tool).is_file():
            return frozenset()
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
        done = subprocess.run([str(bin_dir / tool), *rest, "--help"], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            return None
        return frozenset(re.findall(r"--[A-Za-z0-9][\w-]*", done.stdout))

    unique = sorted(set(commands))
    with ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 1) * 2))) as pool:
        return dict(zip(unique, pool.map(flags, unique), strict=True))


def package_env_names(family: str) -> frozenset[str] | None:
    """The `FAMILY_*` names the installed packages of that family (ENV_PACKAGES) read; None if none is installed."""
    names: set[str] = set()
    installed = False
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){family}_[A-Z0-9_]+")
    for package in ENV_PACKAGES.get(family, ()):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            installed = True
            for directory, _, files in os.walk(location):
                for file in files:
                    if file.endswith(".py"):
                        names |= set(pattern.findall(_read(Path(directory) / file)))
    return frozenset(names) if installed else None


# --- The whole check --------------------------------------------------------------------------------------


def docs(root: Path) -> dict[str, str]:
    """README.md and docs/*.md, whichever exist, by their path from the root."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return {str(p.relative_to(root)): p.read_text() for p in files if p.is_file()}


def check(root: Path, tools: bool = True) -> list[Problem]:
    """Every problem of the project's docs; `tools=False` leaves dvc's and mlflow's commands unchecked."""
    project = Project.of(root)
    texts = docs(project.root)
    mentions = [m for file, text in texts.items() for m in doc_mentions(file, text, project)]
    commands = {m.mention.name for m in mentions if m.mention.kind == "command"} if tools else set()
    flags = help_flags(commands, Path(sys.executable).parent)
    families: dict[str, frozenset[str] | None] = {}

    def package_env(family: str) -> frozenset[str] | None:
        if family not in families:
            families[family] = package_env_names(family)
        return families[family]

    anchors = {file: heading_anchors(text) for file, text in texts.items()}
    return check_mentions(mentions, project, lambda c: flags.get(c, frozenset()), package_env, anchors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project (default: here)")
    args = parser.parse_args(argv)
    problems = check(args.root)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{', '.join(docs(args.root.resolve())) or 'no docs'}: every name the docs give exists")
    return 1 if problems else 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _with_parents(paths: Iterable[str]) -> frozenset[str]:
    found = set()
    for path in paths:
        parts = path.split("/")
        found |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return frozenset(found)


def _plain(word: str) -> bool:
    return bool(WORD_LIKE.fullmatch(word)) and "..." not in word


def _expand(word: str) -> list[str]:
    """Brace expansion: `reports/bench.{md,json}` is two paths."""
    brace = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not brace:
        return [word]
    head, tail = word[: brace.start()], word[brace.end() :]
    return [variant for part in brace.group(1).split(",") for variant in _expand(head + part + tail)]


if __name__ == "__main__":
    sys.exit(main())
