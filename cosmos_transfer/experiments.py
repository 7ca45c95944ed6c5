"""Experiments, found without importing them: an index name -> file, read from the source text.

An experiment is a config node in Hydra group `experiment` (package `_global_`) that overrides whatever it needs:

    from hydra.core.config_store import ConfigStore
    from cosmos_transfer.lazy_config import LazyDict

    my_run = LazyDict(dict(
        defaults=[{"override /net": "tiny"}, {"override /data_train": "demo"}, "_self_"],
        job=dict(group="demo", name="my_run"),
        trainer=dict(max_iter=100),
    ))
    ConfigStore.instance().store(group="experiment", package="_global_", name="my_run", node=my_run)

Where experiments live: `experiments/` in this repository and every folder named in the environment variable
COSMOS_EXPERIMENT_PATH (separated by os.pathsep), searched recursively for `*.py` files; files whose name starts
with `_` (helpers, `__init__.py`) are skipped.

How they are found: each file is read with `ast` (never imported) and the experiment names it declares are recorded
with its path, size and modification time in a JSON cache (`$COSMOS_CACHE_DIR` or `~/.cache/cosmos_transfer`), so
a later run only re-reads files that changed. `experiment=NAME` then imports that one file. A run without
`experiment=` builds no index and imports no experiment file.

What the reader understands (the "declared forms"):
1. A `store(...)` call with `group="experiment"` whose `name` is a literal string (the Cosmos way; files brought
   over from Cosmos work unchanged), anywhere in the file.
2. The same inside module-level `for` loops and with names built from module-level constants, as long as everything
   the name depends on is a literal: f-strings, `+`, `%`, str methods, comprehensions, `range`/`zip`/`enumerate`,
   dict `.keys()`/`.items()` (dict values may be anything). Cosmos' "6 hint keys x pretrain/posttrain" loop reads fine:

       HINT_KEYS = ["edge", "vis", "depth", "seg", "keypoint", "upscale"]
       for key in HINT_KEYS:
           for stage in ("pretrain", "posttrain"):
               cs.store(group="experiment", package="_global_", name=f"ctrl_7b_{key}_{stage}", node=...)

3. Anything else (names computed by functions, read from files, ...): declare them in a module-level
   `EXPERIMENT_NAMES = [...]`, written in the same literal language as above. The index trusts the declaration; after
   importing the file for NAME we check that NAME was really registered.

The same name in two files is an error naming both; a file that does not parse is an error naming file and line.
"""

import ast
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterable, Optional

from cosmos_transfer.config import ConfigError

__all__ = [
    "ExperimentError",
    "ExperimentIndex",
    "experiment_folders",
    "build_index",
    "list_experiments",
    "load_experiment",
    "scan_source",
    "DECLARATION_NAME",
]

DECLARATION_NAME = "EXPERIMENT_NAMES"
ENV_PATH = "COSMOS_EXPERIMENT_PATH"
ENV_CACHE = "COSMOS_CACHE_DIR"
_CACHE_VERSION = 1
_REPO_ROOT = Path(__file__).resolve().parent.parent
_REPO_EXPERIMENTS = _REPO_ROOT / "experiments"


class ExperimentError(ConfigError):
    """Unknown experiment, duplicate names, unreadable or failing experiment file; the message says which and where."""


# ----------------------------------------------------------------------------------------------------------------------
# Reading a file: a tiny evaluator for the literal language of experiment names
# ----------------------------------------------------------------------------------------------------------------------


class _Unknown:
    """A value the reader cannot know without running the file."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()
_MAX_ITEMS = 100_000  # guard against a huge range() in a name loop
_SAFE_FUNCTIONS = {"range": range, "enumerate": enumerate, "zip": zip, "sorted": sorted, "list": list,
                   "tuple": tuple, "str": str, "len": len, "reversed": reversed, "dict": dict, "set": set}
_STR_METHODS = {"lower", "upper", "replace", "format", "join", "strip", "lstrip", "rstrip", "title", "capitalize",
                "split", "removeprefix", "removesuffix"}
_DICT_METHODS = {"keys", "values", "items"}


def _known(value: Any) -> bool:
    """True when value (recursively, for containers of names) holds no UNKNOWN."""
    if value is UNKNOWN:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_known(v) for v in value)
    return True


class _Evaluator:
    def __init__(self, env: dict[str, Any]):
        self.env = env

    def __call__(self, node: ast.AST) -> Any:
        try:
            return self._eval(node)
        except Exception:  # noqa: BLE001 - anything the reader cannot follow is simply unknown
            return UNKNOWN

    def _eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.env.get(node.id, UNKNOWN)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                return UNKNOWN
            items = [self._eval(e) for e in node.elts]
            if isinstance(node, ast.Tuple):
                return tuple(items)
            if isinstance(node, ast.Set):
                return set(items) if _known(items) else UNKNOWN
            return items
        if isinstance(node, ast.Dict):
            out = {}
            for key, value in zip(node.keys, node.values):
                k = self._eval(key) if key is not None else UNKNOWN
                if not _known(k):
                    return UNKNOWN
                out[k] = self._eval(value)
            return out
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                part = self._eval(value)
                if not isinstance(part, str):
                    return UNKNOWN
                parts.append(part)
            return "".join(parts)
        if isinstance(node, ast.FormattedValue):
            value = self._eval(node.value)
            if not _known(value):
                return UNKNOWN
            if node.conversion == ord("r"):
                value = repr(value)
            elif node.conversion == ord("s"):
                value = str(value)
            elif node.conversion == ord("a"):
                value = ascii(value)
            spec = self._eval(node.format_spec) if node.format_spec is not None else ""
            return format(value, spec) if isinstance(spec, str) else UNKNOWN
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left), self._eval(node.right)
            if not (_known(left) and _known(right)):
                return UNKNOWN
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Mult):
                return self._bounded(left * right)
            if isinstance(node.op, ast.Mod) and isinstance(left, str):
                return left % right
            return UNKNOWN
        if isinstance(node, ast.Subscript):
            value, index = self._eval(node.value), self._eval(node.slice)
            if value is UNKNOWN or not _known(index):
                return UNKNOWN
            return value[index]
        if isinstance(node, ast.Slice):
            parts = [self._eval(p) if p is not None else None for p in (node.lower, node.upper, node.step)]
            return slice(*parts) if _known(parts) else UNKNOWN
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            items = list(self._comprehension(node.generators, 0, dict(self.env), node.elt))
            return set(items) if isinstance(node, ast.SetComp) else items
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = self._eval(right_node)
                if not (_known(left) and _known(right)):
                    return UNKNOWN
                ok = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.In: lambda a, b: a in b,
                      ast.NotIn: lambda a, b: a not in b, ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                      ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}[type(op)](left, right)
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            values = [self._eval(v) for v in node.values]
            if not _known(values):
                return UNKNOWN
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand)
            if not _known(value):
                return UNKNOWN
            if isinstance(node.op, ast.Not):
                return not value
            if isinstance(node.op, ast.USub):
                return -value
            return UNKNOWN
        if isinstance(node, ast.IfExp):
            test = self._eval(node.test)
            if not _known(test):
                return UNKNOWN
            return self._eval(node.body if test else node.orelse)
        return UNKNOWN

    def _bounded(self, value: Any) -> Any:
        if isinstance(value, (list, tuple, str)) and len(value) > _MAX_ITEMS:
            return UNKNOWN
        return value

    def _call(self, node: ast.Call) -> Any:
        if node.keywords and any(k.arg is None for k in node.keywords):
            return UNKNOWN
        args = [self._eval(a) for a in node.args]
        kwargs = {k.arg: self._eval(k.value) for k in node.keywords}
        if isinstance(node.func, ast.Name) and node.func.id in _SAFE_FUNCTIONS and node.func.id not in self.env:
            if node.func.id == "range":
                if not _known(args) or len(range(*args)) > _MAX_ITEMS:
                    return UNKNOWN
                return list(range(*args))
            if node.func.id in ("list", "tuple", "sorted", "reversed", "set", "str", "len", "dict"):
                if not (_known(args) and _known(list(kwargs.values()))):
                    return UNKNOWN
            result = _SAFE_FUNCTIONS[node.func.id](*args, **kwargs)
            if isinstance(result, (enumerate, zip, reversed)):
                result = list(result)
            return self._bounded(result)
        if isinstance(node.func, ast.Attribute):
            owner = self._eval(node.func.value)
            method = node.func.attr
            if isinstance(owner, str) and method in _STR_METHODS:
                if not (_known(args) and _known(list(kwargs.values()))):
                    return UNKNOWN
                return getattr(owner, method)(*args, **kwargs)
            if isinstance(owner, dict) and method in _DICT_METHODS and not args and not kwargs:
                return list(getattr(owner, method)())
        return UNKNOWN

    def _comprehension(self, generators: list, i: int, env: dict, element: ast.AST) -> Iterable[Any]:
        if i == len(generators):
            yield _Evaluator(env)._eval(element)
            return
        generator = generators[i]
        iterable = _Evaluator(env)._eval(generator.iter)
        if iterable is UNKNOWN or isinstance(iterable, (int, float)):
            raise ValueError("unknown iterable")
        for count, item in enumerate(iterable):
            if count > _MAX_ITEMS:
                raise ValueError("too many items")
            inner = dict(env)
            _bind(generator.target, item, inner)
            if all(_Evaluator(inner)._eval(cond) is True for cond in generator.ifs):
                yield from self._comprehension(generators, i + 1, inner, element)


def _bind(target: ast.AST, value: Any, env: dict) -> None:
    """Assign value to a Name or a (nested) tuple of Names; unknown where it cannot be unpacked."""
    if isinstance(target, ast.Name):
        env[target.id] = value
    elif isinstance(target, (ast.Tuple, ast.List)):
        items = list(value) if isinstance(value, (list, tuple)) and len(value) == len(target.elts) else None
        for j, element in enumerate(target.elts):
            _bind(element, items[j] if items is not None else UNKNOWN, env)


def _is_experiment_store(call: ast.Call, evaluate: _Evaluator) -> bool:
    func = call.func
    is_store = (isinstance(func, ast.Attribute) and func.attr == "store") or (isinstance(func, ast.Name) and
                                                                              func.id == "store")
    if not is_store:
        return False
    group = next((k.value for k in call.keywords if k.arg == "group"), None)
    if group is None and len(call.args) >= 3:
        group = call.args[2]
    return group is not None and evaluate(group) == "experiment"


def _store_name(call: ast.Call) -> Optional[ast.AST]:
    name = next((k.value for k in call.keywords if k.arg == "name"), None)
    if name is None and call.args:
        name = call.args[0]
    return name


class _FileReader:
    """Walks a module's statements, following module-level assignments, loops and ifs over literals."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}  # name -> line
        self.unresolved: list[int] = []
        self.declared: Optional[list[str]] = None
        self.declaration_problem: Optional[int] = None

    def read(self, tree: ast.Module) -> None:
        self._block(tree.body, {}, top_level=True)

    def _calls(self, node: ast.AST, env: dict) -> None:
        evaluate = _Evaluator(env)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and _is_experiment_store(sub, evaluate):
                name_node = _store_name(sub)
                name = evaluate(name_node) if name_node is not None else UNKNOWN
                if isinstance(name, str) and name:
                    self.names.setdefault(name, sub.lineno)
                else:
                    self.unresolved.append(sub.lineno)

    def _block(self, statements: list, env: dict, top_level: bool = False) -> None:
        for stmt in statements:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                value_node = stmt.value
                if value_node is None:
                    continue
                self._calls(value_node, env)
                value = _Evaluator(env)(value_node)
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    _bind(target, value, env)
                    if top_level and isinstance(target, ast.Name) and target.id == DECLARATION_NAME:
                        self._declare(value, stmt.lineno)
            elif isinstance(stmt, ast.For) and not stmt.orelse:
                iterable = _Evaluator(env)(stmt.iter)
                if iterable is UNKNOWN or not isinstance(iterable, (list, tuple, set, dict, str)):
                    self._calls(stmt, env)
                    continue
                for item in list(iterable)[:_MAX_ITEMS]:
                    inner = dict(env)
                    _bind(stmt.target, item, inner)
                    self._block(stmt.body, inner)
            elif isinstance(stmt, ast.If):
                self._calls(stmt.test, env)
                test = _Evaluator(env)(stmt.test)
                if test is UNKNOWN:
                    self._block(stmt.body, env)
                    self._block(stmt.orelse, env)
                else:
                    self._block(stmt.body if test else stmt.orelse, env)
            elif isinstance(stmt, (ast.With, ast.Try)):
                self._block(stmt.body, env)
                for handler in getattr(stmt, "handlers", []):
                    self._block(handler.body, env)
                self._block(getattr(stmt, "orelse", []), env)
                self._block(getattr(stmt, "finalbody", []), env)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                # Inside a function its parameters shadow module constants.
                inner = dict(env)
                if not isinstance(stmt, ast.ClassDef):
                    for arg in ast.walk(stmt.args):
                        if isinstance(arg, ast.arg):
                            inner.pop(arg.arg, None)
                self._calls(stmt, inner)
            else:
                self._calls(stmt, env)

    def _declare(self, value: Any, line: int) -> None:
        if isinstance(value, (list, tuple, set)) and all(isinstance(v, str) and v for v in value):
            self.declared = list(value)
        else:
            self.declaration_problem = line


def scan_source(source: str, path: str = "<string>") -> dict[str, Any]:
    """Read one experiment file: {"names": [[name, line], ...], "unresolved": [line, ...], "error": None | {...}}."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as error:
        return {"names": [], "unresolved": [], "error": {"line": error.lineno or 0, "message": error.msg}}
    reader = _FileReader()
    reader.read(tree)
    if reader.declaration_problem is not None:
        return {"names": [], "unresolved": [], "error": {
            "line": reader.declaration_problem,
            "message": f"{DECLARATION_NAME} must be a list of non-empty strings readable without importing the file "
                       "(literals, f-strings and comprehensions over module-level literals)"}}
    names = dict(reader.names)
    for name in reader.declared or []:
        names.setdefault(name, 0)
    return {"names": [[name, line] for name, line in names.items()], "unresolved": sorted(set(reader.unresolved)),
            "error": None}


_STORE_CALL = re.compile(r"store\s*\(")  # a literal prefix: a fast search (the word boundary is checked by hand)
# String literals and comments (skipped while matching brackets), and brackets.
_CALL_TOKENS = re.compile(r"""[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'\'\'[\s\S]*?'\'\'|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
                          r"|#[^\n]*|[()\[\]{}]")


def _call_text(text: str, start: int) -> Optional[str]:
    """The source of the call whose `store(` starts at `start`, up to its matching `)`; None if it never closes."""
    depth = 0
    for match in _CALL_TOKENS.finditer(text, text.index("(", start)):
        token = match.group()
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
            if depth == 0:
                return text[start:match.end()]
    return None


def fast_scan(text: str) -> Optional[dict[str, Any]]:
    """The common case without a full parse: every `store(...)` call names a literal group and name.

    Returns None (read the file in full with scan_source) when any call needs more: names from loops or constants,
    an EXPERIMENT_NAMES declaration, or a call that does not parse. Calls in comments and docstrings are skipped.
    """
    if DECLARATION_NAME in text:
        return None
    names: dict[str, int] = {}
    no_names = _Evaluator({})
    for match in _STORE_CALL.finditer(text):
        start = match.start()
        if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            continue  # e.g. `restore(`
        line_start = text.rfind("\n", 0, start) + 1
        if "#" in text[line_start:start] or text.count('"""', 0, start) % 2 or text.count("'''", 0, start) % 2:
            continue  # a comment or inside a docstring
        call_text = _call_text(text, start)
        if call_text is None:
            return None
        try:
            call = ast.parse(call_text, mode="eval").body
        except SyntaxError:
            return None
        if not isinstance(call, ast.Call):
            return None
        group = next((k.value for k in call.keywords if k.arg == "group"), None)
        if group is None and len(call.args) >= 3:
            group = call.args[2]
        if group is None:
            continue  # not a group store (e.g. `def store(self, ...)`)
        group_value = no_names(group)
        if group_value is UNKNOWN:
            return None
        if group_value != "experiment":
            continue
        name_node = _store_name(call)
        name = no_names(name_node) if name_node is not None else UNKNOWN
        if not (isinstance(name, str) and name):
            return None
        names.setdefault(name, text.count("\n", 0, start) + 1)
    return {"names": [[name, line] for name, line in names.items()], "unresolved": [], "error": None}


_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*(?::[^=\n]*)?=[^=]")
_LONG_CHUNK = 2000  # characters


def reduced_scan(text: str, path: str = "<string>") -> Optional[dict[str, Any]]:
    """scan_source on the file with its long module-level assignments that never mention `store` blanked out.

    Those are the big LazyDict literals, most of the parsing cost and never part of a name. Line numbers are kept.
    Returns None (read the file in full) if the reduced file leaves a name unknown or does not parse.
    """
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1] and not line[0].isspace() and line[0] not in "#)]}\"'"]
    starts.append(len(lines))
    blanked = False
    for begin, end in zip(starts, starts[1:]):
        if not _ASSIGNMENT.match(lines[begin]):
            continue
        chunk = "".join(lines[begin:end])
        if len(chunk) > _LONG_CHUNK and "store" not in chunk and DECLARATION_NAME not in chunk:
            lines[begin:end] = ["\n"] * (end - begin)
            blanked = True
    if not blanked:
        return None
    entry = scan_source("".join(lines), path)
    if entry["error"] is not None or entry["unresolved"]:
        return None
    return entry


# ----------------------------------------------------------------------------------------------------------------------
# The index and its cache
# ----------------------------------------------------------------------------------------------------------------------


def experiment_folders() -> list[Path]:
    """`experiments/` of this repository (if present) and the folders of COSMOS_EXPERIMENT_PATH, in search order."""
    folders: list[Path] = []
    if _REPO_EXPERIMENTS.is_dir():
        folders.append(_REPO_EXPERIMENTS)
    for entry in os.environ.get(ENV_PATH, "").split(os.pathsep):
        if not entry.strip():
            continue
        folder = Path(entry).expanduser().resolve()
        if not folder.is_dir():
            raise ExperimentError(f"{ENV_PATH} names '{entry}', which is not a folder. Set it to folders holding your "
                                  f"experiment files, separated by '{os.pathsep}'.")
        if folder not in folders:
            folders.append(folder)
    return folders


def _python_files(folder: Path) -> Iterable[os.DirEntry]:
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith((".", "_")):
                    continue  # hidden, __pycache__, __init__.py and _helpers.py
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.name.endswith(".py") and entry.is_file():
                    yield entry


def _cache_path() -> Path:
    root = os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cosmos_transfer")
    return Path(root) / "experiment_index.json"


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") == _CACHE_VERSION and isinstance(data.get("files"), dict):
            return data["files"]
    except (OSError, ValueError):
        pass
    return {}


def _save_cache(path: Path, files: dict[str, Any]) -> None:
    """Atomic write (several torchrun ranks may write at once); a read-only cache folder is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".experiment_index.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": _CACHE_VERSION, "files": files}, f)
        os.replace(tmp, path)
    except OSError:
        pass


class ExperimentIndex:
    """name -> (file, line) over the given folders; `problems` lists unresolved store calls for error messages."""

    def __init__(self, folders: list[Path], entries: dict[str, dict[str, Any]]):
        self.folders = folders
        self.locations: dict[str, tuple[str, int]] = {}
        self.unresolved: list[tuple[str, int]] = []
        errors = []
        duplicates = []
        for path, entry in entries.items():
            if entry.get("error"):
                errors.append(f"{path} line {entry['error']['line']}: {entry['error']['message']}")
                continue
            for name, line in entry["names"]:
                if name in self.locations and self.locations[name][0] != path:
                    other, other_line = self.locations[name]
                    duplicates.append(f"'{name}' is defined in both {_where(other, other_line)} and "
                                      f"{_where(path, line)}")
                else:
                    self.locations[name] = (path, line)
            self.unresolved.extend((path, line) for line in entry["unresolved"])
        if errors:
            raise ExperimentError("Cannot read experiment file(s) (syntax error): " + "; ".join(errors) +
                                  ". Fix the file, or move it out of the experiment folders.")
        if duplicates:
            raise ExperimentError("Duplicate experiment names: " + "; ".join(duplicates) +
                                  ". Rename one of them: an experiment name must be unique across all folders.")

    def names(self) -> list[str]:
        return sorted(self.locations)


def _where(path: str, line: int) -> str:
    return f"{path} (line {line})" if line else f"{path} ({DECLARATION_NAME})"


def build_index(folders: Optional[list[Path]] = None, use_cache: bool = True) -> ExperimentIndex:
    """Read (or take from the cache) every experiment file's declared names. Never imports an experiment file."""
    folders = experiment_folders() if folders is None else [Path(f).resolve() for f in folders]
    cache_file = _cache_path()
    cached = _load_cache(cache_file) if use_cache else {}
    entries: dict[str, dict[str, Any]] = {}
    changed = False
    for folder in folders:
        for file in _python_files(folder):
            stat = file.stat()
            path = file.path
            entry = cached.get(path)
            if entry is None or entry.get("mtime_ns") != stat.st_mtime_ns or entry.get("size") != stat.st_size:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", errors="replace")
                # Cheapest reading that is complete: literal calls only; the file without its big literals; all of it.
                entry = fast_scan(text) or reduced_scan(text, path) or scan_source(text, path)
                entry.update(mtime_ns=stat.st_mtime_ns, size=stat.st_size)
                changed = True
            entries[path] = entry
    if use_cache:
        # Keep other folders' entries (other COSMOS_EXPERIMENT_PATH settings); drop deleted files of these folders.
        prefixes = tuple(str(folder) + os.sep for folder in folders)
        kept = {p: e for p, e in cached.items() if not p.startswith(prefixes)}
        if changed or len(kept) + len(entries) != len(cached):
            _save_cache(cache_file, {**kept, **entries})
    return ExperimentIndex(folders, entries)


def list_experiments() -> list[tuple[str, str]]:
    """(name, file) for every experiment found, sorted by name; no experiment file is imported."""
    index = build_index()
    return [(name, index.locations[name][0]) for name in index.names()]


# ----------------------------------------------------------------------------------------------------------------------
# Importing the one file a run needs
# ----------------------------------------------------------------------------------------------------------------------

_imported: dict[str, int] = {}  # file -> mtime_ns when it was imported in this process


def _module_name(path: Path) -> str:
    try:
        relative = path.relative_to(_REPO_EXPERIMENTS)
    except ValueError:
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        return f"_cosmos_experiments_{digest}.{path.stem}"
    return "experiments." + ".".join(relative.with_suffix("").parts)


def _registered(name: str) -> bool:
    from hydra.core.config_store import ConfigStore

    return f"{name}.yaml" in ConfigStore.instance().repo.get("experiment", {})


def _import_file(path: Path, folder: Optional[Path]) -> None:
    module_name = _module_name(path)
    if module_name.startswith("experiments.") and str(_REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(_REPO_ROOT))
    if folder is not None and str(folder) not in sys.path and not module_name.startswith("experiments."):
        sys.path.append(str(folder))  # so a user's experiment can import its own helper modules
    if module_name.startswith("experiments."):
        if module_name in sys.modules:
            importlib.reload(sys.modules[module_name])
        else:
            importlib.import_module(module_name)
        return
    package = module_name.split(".")[0]
    if package not in sys.modules:
        package_spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
        sys.modules[package] = importlib.util.module_from_spec(package_spec)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise


def _failure_location(error: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == str(path)]
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        if os.path.abspath(error.filename) == str(path):
            return f" (line {error.lineno})"
        return f" ({error.filename} line {error.lineno})"
    return f" (line {frames[-1].lineno})" if frames else ""


def load_experiment(name: str) -> Path:
    """Import the file that defines experiment `name` (only that one) and check that it registered it."""
    index = build_index()
    if name not in index.locations:
        raise ExperimentError(_unknown_experiment_message(name, index))
    path_text, line = index.locations[name]
    path = Path(path_text)
    mtime = path.stat().st_mtime_ns
    if _imported.get(path_text) == mtime and _registered(name):
        return path
    folder = next((f for f in index.folders if str(path).startswith(str(f) + os.sep)), None)
    try:
        _import_file(path, folder)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - an experiment file may raise anything; report it in one paragraph
        raise ExperimentError(f"Importing experiment file {path} for experiment '{name}' failed"
                              f"{_failure_location(error, path)}: {type(error).__name__}: "
                              f"{error.msg if isinstance(error, SyntaxError) else error}") from error
    _imported[path_text] = mtime
    if not _registered(name):
        raise ExperimentError(f"{_where(path_text, line)} was expected to register experiment '{name}' "
                              "(group='experiment') when imported, but did not. Check the store(...) call or "
                              f"the {DECLARATION_NAME} declaration.")
    return path


def _unknown_experiment_message(name: str, index: ExperimentIndex) -> str:
    names = index.names()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    searched = ", ".join(str(f) for f in index.folders) or "(no folder: experiments/ is missing)"
    message = f"Unknown experiment '{name}'."
    if close:
        message += f" Did you mean: {', '.join(close)}?"
    message += (f" Searched {len(names)} experiment(s) in: {searched} (add folders with {ENV_PATH}, separated by "
                f"'{os.pathsep}'; list them all with scripts/train.py --list-experiments).")
    if index.unresolved:
        sites = ", ".join(f"{p} line {line}" for p, line in index.unresolved[:5])
        message += (f" Some store(group='experiment') calls have names that cannot be read without importing "
                    f"({sites}); declare those names in a module-level {DECLARATION_NAME} list.")
    return message
