"""Experiments, found without importing them: an index name -> file, read from the source text.

An experiment is a config node in Hydra group `experiment` (package `_global_`) that overrides whatever it needs:

    from hydra.core.config_store import ConfigStore
    from cosmos_transfer.config.lazy import LazyDict

    my_run = LazyDict(dict(
        defaults=[{"override /net": "tiny"}, {"override /data_train": "demo"}, "_self_"],
        job=dict(group="demo", name="my_run"),
        trainer=dict(max_iter=100),
    ))
    ConfigStore.instance().store(group="experiment", package="_global_", name="my_run", node=my_run)

Where experiments live: `experiments/` in this repository and every folder named in the environment variable
COSMOS_EXPERIMENT_PATH (separated by os.pathsep), searched recursively for `*.py` files; files whose name starts
with `_` (helpers, `__init__.py`) are skipped.

How they are found: each file is parsed with `ast` (never imported or run) and the experiment names it declares are
recorded with its path, size and modification time in a JSON cache (`$COSMOS_CACHE_DIR` or
`~/.cache/cosmos_transfer`), so a later run only re-reads files that changed. `experiment=NAME` parses only the files
whose text holds NAME (names are literals, so no other file can define it), then imports the one that defines it.
A run without `experiment=` builds no index and imports no experiment file.

A file declares its names in one of two ways:
1. `store(...)` calls with a literal `group="experiment"` and a literal `name="..."`, anywhere in the file (the
   Cosmos way: files brought over from Cosmos work unchanged).
2. A module-level `EXPERIMENT_NAMES = ["a", "b", ...]`, a literal list of strings, for names the file builds (in a
   loop, an f-string, a function). After importing the file for NAME we check that NAME was really registered.
A `store(group="experiment", ...)` call whose name is not a literal, in a file without EXPERIMENT_NAMES, is reported
(file and line) when a run asks for an experiment that is not found, with the advice to declare it.

The same name in two files is an error naming both. A file that does not parse never blocks experiments of other
files: the statements before its syntax error are still read, and its file and line are named when a run asks for
one of its experiments (the import fails) or for a name found nowhere.
"""

import ast
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterable, Optional

from cosmos_transfer.config.errors import ConfigError, ExperimentError

__all__ = ["ExperimentIndex", "experiment_folders", "read_experiment_file", "build_index", "list_experiments",
           "load_experiment", "DECLARATION_NAME"]

DECLARATION_NAME = "EXPERIMENT_NAMES"
ENV_PATH = "COSMOS_EXPERIMENT_PATH"
ENV_CACHE = "COSMOS_CACHE_DIR"
_CACHE_VERSION = 2  # 2: one ast reader (literal names and EXPERIMENT_NAMES only)
_REPO_ROOT = Path(__file__).resolve().parents[2]
_REPO_EXPERIMENTS = _REPO_ROOT / "experiments"


# ----------------------------------------------------------------------------------------------------------------------
# Reading one file
# ----------------------------------------------------------------------------------------------------------------------


def _literal_string(node: Optional[ast.AST]) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _store_call_argument(call: ast.Call, keyword: str, position: int) -> Optional[ast.AST]:
    """The argument of ConfigStore.store(name, node, group=...) given by keyword or by position."""
    value = next((k.value for k in call.keywords if k.arg == keyword), None)
    if value is None and len(call.args) > position:
        value = call.args[position]
    return value


def _is_store_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "store") or (isinstance(func, ast.Name) and
                                                                          func.id == "store")


def _read_tree(tree: ast.Module) -> dict[str, Any]:
    names: dict[str, int] = {}  # name -> line of its store call (0: from the declaration)
    unresolved: list[int] = []
    declared: Optional[list[str]] = None
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == DECLARATION_NAME for t in targets):
            try:
                value = ast.literal_eval(statement.value)
            except (ValueError, TypeError, SyntaxError):
                value = None
            if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)):
                return {"names": [], "unresolved": [], "error": {
                    "line": statement.lineno,
                    "message": f"{DECLARATION_NAME} must be a literal list of non-empty strings, e.g. "
                               f"{DECLARATION_NAME} = [\"run_a\", \"run_b\"] (it is read without running the file)"}}
            declared = list(value)
    for node in ast.walk(tree):
        if not _is_store_call(node) or _literal_string(_store_call_argument(node, "group", 2)) != "experiment":
            continue
        name = _literal_string(_store_call_argument(node, "name", 0))
        if name:
            names.setdefault(name, node.lineno)
        else:
            unresolved.append(node.lineno)
    for name in declared or []:
        names.setdefault(name, 0)
    # A declaration covers the file's computed names: its store calls are not reported as unreadable.
    return {"names": [[name, line] for name, line in names.items()],
            "unresolved": [] if declared is not None else sorted(set(unresolved)), "error": None}


def read_experiment_file(source: str, path: str = "<string>") -> dict[str, Any]:
    """The experiments one file declares: {"names": [[name, line], ...], "unresolved": [line, ...], "error": ...}.

    `error` is None or {"line", "message"}: a syntax error or an unreadable EXPERIMENT_NAMES. After a syntax error the
    statements before it are still read, so a half-edited file keeps the names it had (its import then fails with
    the file and line).
    """
    lines = source.splitlines(keepends=True)
    error = None
    readable = len(lines)
    for _ in range(5):  # each retry cuts at an earlier line; a few retries reach the last complete statement
        try:
            tree = ast.parse("".join(lines[:readable]), filename=path)
        except SyntaxError as syntax_error:
            if error is None:
                error = {"line": syntax_error.lineno or 0, "message": f"SyntaxError: {syntax_error.msg}"}
            line = syntax_error.lineno or readable
            readable = line - 1 if line - 1 < readable else readable - 1
            if readable <= 0:
                break
            continue
        entry = _read_tree(tree)
        if error is not None and entry["error"] is None:
            entry["error"] = error
        return entry
    return {"names": [], "unresolved": [], "error": error}


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
    """name -> (file, line) over the given folders, with what could not be read for the error messages."""

    def __init__(self, folders: list[Path], entries: dict[str, dict[str, Any]]):
        self.folders = folders
        self.locations: dict[str, tuple[str, int]] = {}
        self.unresolved: list[tuple[str, int]] = []  # store calls whose name is not a literal (and no declaration)
        self.unreadable: list[str] = []  # "file line N: ..." of files that do not parse or declare badly
        duplicates = []
        for path, entry in entries.items():
            if entry.get("error"):
                self.unreadable.append(f"{path} line {entry['error']['line']}: {entry['error']['message']}")
            for name, line in entry["names"]:
                if name in self.locations and self.locations[name][0] != path:
                    other, other_line = self.locations[name]
                    duplicates.append(f"'{name}' is defined in both {_where(other, other_line)} and "
                                      f"{_where(path, line)}")
                else:
                    self.locations[name] = (path, line)
            self.unresolved.extend((path, line) for line in entry["unresolved"])
        if duplicates:
            raise ExperimentError("Duplicate experiment names: " + "; ".join(duplicates) +
                                  ". Rename one of them: an experiment name must be unique across all folders.")

    def names(self) -> list[str]:
        return sorted(self.locations)


def _where(path: str, line: int) -> str:
    return f"{path} (line {line})" if line else f"{path} ({DECLARATION_NAME})"


def build_index(folders: Optional[list[Path]] = None, use_cache: bool = True,
                containing: Optional[str] = None) -> ExperimentIndex:
    """Read (or take from the cache) every experiment file's declared names. Never imports an experiment file.

    containing=NAME: only the files that can define NAME. Both declared forms are literals, so such a file holds the
    text NAME (or, cached, lists NAME); the others are not parsed. A run for one experiment reads one file or two
    instead of the whole folder on a cold cache, and still sees every file that defines NAME (duplicates included).
    """
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
                if containing is not None and containing not in text:
                    continue  # cannot define it: not parsed, not cached
                entry = read_experiment_file(text, path)
                entry.update(mtime_ns=stat.st_mtime_ns, size=stat.st_size)
                changed = True
            elif containing is not None and not any(name == containing for name, _ in entry["names"]):
                continue
            entries[path] = entry
    if use_cache:
        if containing is not None:  # a partial reading: add what was read, keep the rest as it is
            if changed:
                _save_cache(cache_file, {**cached, **entries})
        else:  # keep other folders' entries (other COSMOS_EXPERIMENT_PATH settings); drop deleted files of these
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
    index = build_index(containing=name)
    if name not in index.locations:
        # Not where its text is (a name written with escapes, say), or unknown: read every file, for the message too.
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
    if index.unreadable:
        message += (" Experiment file(s) that cannot be read (fix them, or move them out of the experiment folders), "
                    "which may define it: " + "; ".join(index.unreadable) + ".")
    if index.unresolved:
        sites = ", ".join(f"{p} line {line}" for p, line in index.unresolved[:5])
        message += (f" Some store(group='experiment') calls have names that cannot be read without importing "
                    f"({sites}); declare those names in a module-level {DECLARATION_NAME} list.")
    return message
