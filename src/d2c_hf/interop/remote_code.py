"""The files that let diffusers load a saved SiT without d2c-hf (``trust_remote_code=True``).

diffusers (0.42, ``pipelines/pipeline_loading_utils.py``) loads a pipeline component whose class is not from
diffusers or transformers in one of two ways:

* from the file ``<component>/<library>.py`` in the component's folder, where ``model_index.json`` records the
  component as ``[<library>, <Class>]``, and the pipeline class from ``<file>.py`` in the repository root, recorded
  as ``"_class_name": [<file>, <Class>]``. Both run code from the folder, so diffusers asks for
  ``trust_remote_code=True``: the user's decision, never passed by d2c-hf;
* otherwise from ``sys.modules[<library>]``: the library must already be imported.

``AutoModel.from_pretrained(model_folder, trust_remote_code=True)`` reads ``"auto_map": {"AutoModel":
"<file>.<Class>"}`` from the model's ``config.json``. A folder saved by d2c-hf serves all of these:

==============================  ===========================================================================
``model_index.json``            ``"_class_name": ["pipeline_sit", "SiTPipeline"]``; d2c-hf components as
                                ``["d2c_hf", "<Class>"]``
``pipeline_sit.py``             the pipeline: :mod:`d2c_hf.pipelines.sit.pipeline_sit` and the VAE helpers it uses
``<component>/d2c_hf.py``       the components: :mod:`d2c_hf.models.transformer_sit` and
                                :mod:`d2c_hf.schedulers.scheduling_flow_match_euler_maruyama`, the same file in each folder
``transformer/config.json``     ``"auto_map": {"AutoModel": "d2c_hf.SiTTransformer2DModel"}``
==============================  ===========================================================================

The library name is the package itself, ``d2c_hf``: after ``import d2c_hf`` it is in ``sys.modules`` and
resolves the component classes and the diffusers base classes the loader looks for (lazily, see
``d2c_hf.__getattr__``), so ``AutoModel.from_pretrained(folder, subfolder="transformer")`` needs no remote code.
Both component kinds carry that name, hence one file holding both: diffusers copies every ``d2c_hf.py`` it loads
to the same module (``diffusers_modules.local.d2c_hf``), so they must be identical. ``SiTPipeline.from_pretrained``
maps the entries back to the installed modules (:func:`resolve_index`) and never runs the saved files.

The files are generated from the package's own source each time a folder is saved: module bodies verbatim,
imports merged, relative imports resolved (names of a module in the same file dropped, the helpers a module
imports copied in, the model class in the pipeline file bound to its diffusers base class: the loaded model comes
from another module), and the methods that write or read these files left out. So they cannot drift from the
package; ``tests/test_remote_code.py`` loads them where d2c_hf cannot be imported.
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import os
import symtable
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "COMPONENTS_FILE",
    "COMPONENT_CLASSES",
    "LIBRARY",
    "PIPELINE_CLASS",
    "PIPELINE_FILE",
    "add_auto_map",
    "component_module_source",
    "pipeline_index",
    "pipeline_module_source",
    "resolve_class_name",
    "resolve_index",
    "write_component_file",
    "write_pipeline_files",
]

#: library name recorded for d2c-hf components in ``model_index.json`` and ``auto_map``
LIBRARY = "d2c_hf"
#: the components' file in each component folder
COMPONENTS_FILE = f"{LIBRARY}.py"
#: the pipeline's file in the folder root (``_class_name: [stem, PIPELINE_CLASS]``)
PIPELINE_FILE = "pipeline_sit.py"
PIPELINE_CLASS = "SiTPipeline"
#: component class -> the module that defines it (both are bundled into ``d2c_hf.py``)
COMPONENT_CLASSES: dict[str, str] = {
    "SiTTransformer2DModel": "d2c_hf.models.transformer_sit",
    "FlowMatchEulerMaruyamaScheduler": "d2c_hf.schedulers.scheduling_flow_match_euler_maruyama",
}
_PIPELINE_MODULE = "d2c_hf.pipelines.sit.pipeline_sit"
# modules whose imported helpers are copied into a generated file (only the functions imported, and their needs)
_INLINED = ("d2c_hf.utils.vae",)
# in the pipeline file, the model class is its diffusers base: diffusers type-checks the loaded transformer
# (from <component>/d2c_hf.py, another module) against the pipeline's annotation
_BASE_ALIASES = {
    ("d2c_hf.models.transformer_sit", "SiTTransformer2DModel"): (
        "diffusers.models.modeling_utils",
        "ModelMixin",
    )
}
# the methods that write or read these files: they need the package
_PACKAGE_ONLY = {
    "SiTTransformer2DModel": ("to_json_string", "save_config", "from_pretrained"),
    "SiTPipeline": (
        "save_pretrained",
        "from_pretrained",
        "to_json_string",
        "save_config",
        "load_config",
        "_dict_from_json_file",
    ),
}
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # src/d2c_hf
_GENERATED_MARK = "Generated by d2c_hf.interop.remote_code"
_NOTICE = "# Copyright 2025 The d2c-hf authors. Apache-2.0."


# --------------------------------------------------------------------------------------
# writing and reading saved folders
# --------------------------------------------------------------------------------------


def write_component_file(directory: str | os.PathLike) -> Path:
    """Write ``d2c_hf.py`` (:func:`component_module_source`) into ``directory``; returns its path."""
    path = Path(directory) / COMPONENTS_FILE
    _write_text(path, component_module_source())
    return path


def write_pipeline_files(directory: str | os.PathLike, components: Mapping[str, Any]) -> list[Path]:
    """Write ``pipeline_sit.py`` into ``directory`` and ``d2c_hf.py`` into the folder of every d2c-hf component
    (``components``: name -> object, as ``pipeline.components``); returns the paths written."""
    directory = Path(directory)
    written = [directory / PIPELINE_FILE]
    _write_text(written[0], pipeline_module_source())
    for name in sorted(_own_components(components)):
        written.append(write_component_file(directory / name))
    return written


def add_auto_map(config_json: str, class_name: str) -> str:
    """``config.json`` text with ``"auto_map": {"AutoModel": "d2c_hf.<class_name>"}`` (for ``AutoModel``)."""
    config = json.loads(config_json)
    config["auto_map"] = {**config.get("auto_map", {}), "AutoModel": f"{LIBRARY}.{class_name}"}
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def pipeline_index(index_json: str, components: Mapping[str, Any]) -> str:
    """``model_index.json`` text as saved: the pipeline class from ``pipeline_sit.py``, d2c-hf components under
    the library ``d2c_hf`` (whatever module diffusers recorded for them)."""
    index = json.loads(index_json)
    index["_class_name"] = [PIPELINE_FILE.removesuffix(".py"), PIPELINE_CLASS]
    for name in _own_components(components):
        index[name] = [LIBRARY, type(getattr(components[name], "_orig_mod", components[name])).__name__]
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def resolve_class_name(index: dict[str, Any]) -> dict[str, Any]:
    """``model_index.json`` as read by ``SiTPipeline``: ``_class_name`` ``["pipeline_sit", C]`` -> ``C``, so
    diffusers takes the installed class instead of running ``pipeline_sit.py``."""
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)) and len(name) == 2 and name[0] == PIPELINE_FILE.removesuffix(".py"):
        index = {**index, "_class_name": name[1]}
    return index


def resolve_index(index: dict[str, Any]) -> dict[str, Any]:
    """:func:`resolve_class_name`, and d2c-hf components ``["d2c_hf", C]`` -> ``[<module of C>, C]``: diffusers
    then imports nothing from the folder (no ``<component>/<module>.py`` exists) and takes the installed class
    from ``sys.modules``."""
    index = resolve_class_name(index)
    resolved = {}
    for key, value in index.items():
        if (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and value[0] == LIBRARY
            and value[1] in COMPONENT_CLASSES
        ):
            value = [COMPONENT_CLASSES[value[1]], value[1]]
        resolved[key] = value
    return resolved


def _own_components(components: Mapping[str, Any]) -> list[str]:
    """Names of the components whose class is a d2c-hf component class (``torch.compile`` wrappers unwrapped)."""
    own = []
    for name, component in components.items():
        cls = type(getattr(component, "_orig_mod", component))
        if component is not None and COMPONENT_CLASSES.get(cls.__name__) == cls.__module__:
            own.append(name)
    return own


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a reader never sees half a module (and a full disk
    leaves no temporary file; the error names ``path``)."""
    from ..utils.files import atomic_write

    data = text.encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


# --------------------------------------------------------------------------------------
# generating the files
# --------------------------------------------------------------------------------------


@functools.cache
def component_module_source() -> str:
    """The text of ``d2c_hf.py``: the SiT model and the SDE scheduler as one module that imports only torch,
    numpy and diffusers."""
    from ..version import __version__

    modules = tuple(dict.fromkeys(COMPONENT_CLASSES.values()))
    summary = f"{', '.join(COMPONENT_CLASSES)} of d2c-hf {__version__}, as one self-contained module."
    usage = (
        "    from diffusers import AutoModel, DiffusionPipeline\n"
        '    model = AutoModel.from_pretrained("<model folder or repo>", trust_remote_code=True)\n'
        '    pipe = DiffusionPipeline.from_pretrained("<pipeline folder or repo>", trust_remote_code=True)'
    )
    return _bundle(modules, summary=summary, usage=usage)


@functools.cache
def pipeline_module_source() -> str:
    """The text of ``pipeline_sit.py``: ``SiTPipeline`` and the helpers it imports, self-contained."""
    from ..version import __version__

    summary = f"{PIPELINE_CLASS} of d2c-hf {__version__}, as one self-contained module."
    usage = (
        "    from diffusers import DiffusionPipeline\n"
        '    pipe = DiffusionPipeline.from_pretrained("<pipeline folder or repo>", trust_remote_code=True)'
    )
    return _bundle((_PIPELINE_MODULE,), summary=summary, usage=usage)


@dataclass(frozen=True)
class _Import:
    module: str | None  # None: ``import name``
    name: str
    asname: str | None

    @property
    def bound(self) -> str:
        if self.asname:
            return self.asname
        return self.name.split(".")[0] if self.module is None else self.name


@dataclass
class _Source:
    name: str
    path: Path
    text: str
    tree: ast.Module

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines(keepends=True)


@functools.cache
def _source(module: str) -> _Source:
    parts = module.split(".")
    if parts[0] != "d2c_hf":
        raise ValueError(f"not a d2c_hf module: {module}")
    path = _PACKAGE_ROOT.joinpath(*parts[1:]).with_suffix(".py")
    text = path.read_text(encoding="utf-8")
    return _Source(module, path, text, ast.parse(text))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute module name of ``from <node.module> import ...`` written in ``module`` (a plain module file)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _used_names(code: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}


def _start(node: ast.stmt) -> int:
    """First line of a statement, decorators included (1-based)."""
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno, *(d.lineno for d in decorators)])


def _drop_range(lines: list[str], node: ast.stmt) -> range:
    """Lines of ``node`` plus the comment block above it (a section banner), not the blank line before that."""
    first = _start(node) - 1
    while first > 0 and (not lines[first - 1].strip() or lines[first - 1].strip().startswith("#")):
        first -= 1
    while first < _start(node) - 1 and not lines[first].strip():
        first += 1
    return range(first, node.end_lineno)


def _module_body(source: _Source) -> tuple[str, list[ast.stmt], str]:
    """``(body text, top-level import statements, docstring)``: the module without its docstring, imports,
    ``__all__`` and package-only methods, everything else verbatim."""
    lines = source.lines
    dropped: set[int] = set()
    imports: list[ast.stmt] = []
    docstring = ast.get_docstring(source.tree) or ""
    for index, node in enumerate(source.tree.body):
        if index == 0 and docstring and isinstance(node, ast.Expr):
            dropped.update(range(node.lineno - 1, node.end_lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
            dropped.update(range(node.lineno - 1, node.end_lineno))
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            dropped.update(_drop_range(lines, node))
        elif isinstance(node, ast.ClassDef) and node.name in _PACKAGE_ONLY:
            methods = {m.name: m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for name in _PACKAGE_ONLY[node.name]:
                if name not in methods:
                    raise RuntimeError(
                        f"{source.name}.{node.name} has no method {name!r}: update d2c_hf.interop.remote_code._PACKAGE_ONLY"
                    )
                dropped.update(_drop_range(lines, methods[name]))
    kept = [line for number, line in enumerate(lines) if number not in dropped]
    while kept and (not kept[0].strip() or kept[0].startswith("#")):
        kept.pop(0)  # the file's notice (copyright): once, atop the generated file
    return _squeeze_blank_lines("".join(kept)), imports, docstring


def _squeeze_blank_lines(text: str) -> str:
    out: list[str] = []
    for line in text.strip("\n").splitlines():
        if not line.strip() and len(out) >= 2 and not out[-1].strip() and not out[-2].strip():
            continue
        out.append(line.rstrip())
    return "\n".join(out) + "\n"


def _inline(module: str, names: Iterable[str]) -> tuple[str, list[ast.stmt]]:
    """The top-level definitions ``names`` of ``module`` and those they use, in source order, and the module's
    import statements (pruned later to what the file uses)."""
    source = _source(module)
    definitions: dict[str, ast.stmt] = {}
    for node in source.tree.body:
        for name in _top_level_names(ast.Module(body=[node], type_ignores=[])):
            definitions[name] = node
    needed: set[ast.stmt] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in definitions:
            raise RuntimeError(f"cannot copy {name!r} from {module}: not a top-level definition there")
        if definitions[name] in needed:
            continue
        needed.add(definitions[name])
        todo += [n for n in _used_names(ast.unparse(definitions[name])) if n in definitions]
    lines = source.lines
    chunks = [
        "".join(lines[_start(node) - 1 : node.end_lineno]) for node in source.tree.body if node in needed
    ]
    text = "\n\n".join(chunk.rstrip("\n") + "\n" for chunk in chunks)
    used = _used_names(text)
    imports: list[ast.stmt] = []
    for node in source.tree.body:  # only what the copied definitions use (``.hub`` for ``load_vae`` is not)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            aliases = [a for a in node.names if _bound(a, node) in used]
            if aliases:
                imports.append(
                    ast.Import(names=aliases)
                    if isinstance(node, ast.Import)
                    else ast.ImportFrom(module=node.module, names=aliases, level=node.level)
                )
    return text, imports


def _bound(alias: ast.alias, node: ast.stmt) -> str:
    if alias.asname:
        return alias.asname
    return alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name


def _bundle(modules: tuple[str, ...], *, summary: str, usage: str) -> str:
    """One self-contained module from package ``modules`` (see the module docstring for the rules)."""
    bundled = set(modules)
    pool: list[_Import] = []
    sections: list[tuple[str, str, str]] = []  # (title, docstring, body)
    inline_requests: dict[str, list[str]] = {}
    pending: list[tuple[str, ast.stmt]] = []

    for module in modules:
        body, imports, docstring = _module_body(_source(module))
        pending += [(module, node) for node in imports]
        sections.append((str(_source(module).path.relative_to(_PACKAGE_ROOT.parent)), docstring, body))

    inlined_done: set[tuple[str, str]] = set()
    while pending:
        module, node = pending.pop(0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "d2c_hf":
                    raise RuntimeError(f"{module}: `import {alias.name}` cannot be made self-contained")
                pool.append(_Import(None, alias.name, alias.asname))
            continue
        target = _resolve(module, node)
        if target == "__future__":
            continue
        if target.split(".")[0] != "d2c_hf":
            pool += [_Import(target, alias.name, alias.asname) for alias in node.names]
            continue
        for alias in node.names:
            if target in bundled:
                if alias.name not in _top_level_names(_source(target).tree) or alias.asname:
                    raise RuntimeError(f"{module} imports {target}.{alias.name}, not a plain top-level name")
            elif (target, alias.name) in _BASE_ALIASES:
                base_module, base_name = _BASE_ALIASES[(target, alias.name)]
                pool.append(_Import(base_module, base_name, alias.asname or alias.name))
            elif target in _INLINED and not alias.asname:
                if (target, alias.name) not in inlined_done:
                    inlined_done.add((target, alias.name))
                    inline_requests.setdefault(target, []).append(alias.name)
            else:
                raise RuntimeError(
                    f"{module} imports {target}.{alias.name}: not bundled, copied or aliased by d2c_hf.interop.remote_code"
                )
        for target_module, names in list(inline_requests.items()):
            if names:
                text, imports = _inline(target_module, names)
                title = f"{_source(target_module).path.relative_to(_PACKAGE_ROOT.parent)} (only {', '.join(names)})"
                sections.insert(0, (title, "", text))
                pending += [(target_module, imp) for imp in imports]
                inline_requests[target_module] = []

    code = "\n\n".join(body for _, _, body in sections)
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "d2c_hf"):
            raise RuntimeError(
                f"an import inside a function cannot be made self-contained: {ast.unparse(node)}"
            )
    defined: list[str] = []
    for _, _, body in sections:
        defined += sorted(_top_level_names(ast.parse(body)))
    clashes = sorted({name for name in defined if defined.count(name) > 1})
    if clashes:
        raise RuntimeError(f"names defined in more than one bundled module: {clashes}")

    used = _used_names(code)
    kept = list(dict.fromkeys(imp for imp in pool if imp.bound in used))
    header = [
        _NOTICE,
        f'"""{summary}',
        "",
        f"{_GENERATED_MARK} from {', '.join(title.split(' ')[0] for title, _, _ in sections)}",
        "when the folder was saved, so that diffusers loads it without d2c-hf installed:",
        "",
        usage,
        "",
        "Do not edit: saving again with d2c-hf regenerates it. With d2c-hf installed, `SiTPipeline.from_pretrained`",
        "and `SiTTransformer2DModel.from_pretrained` load the folder without running this file.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *_render_imports(kept),
    ]
    parts = ["\n".join(header)]
    for title, docstring, body in sections:
        rule = "# " + "-" * 98
        doc = [f"# {line}".rstrip() for line in docstring.splitlines()]
        parts.append(
            "\n".join([rule, f"# {title}", *(["#", *doc] if doc else []), rule, "", body.rstrip("\n")])
        )
    text = "\n\n\n".join(parts) + "\n"
    missing = _undefined_globals(text)
    if missing:
        raise RuntimeError(f"the generated module would use undefined names: {missing}")
    return text


def _undefined_globals(text: str) -> list[str]:
    """Global names that ``text`` reads but neither defines, imports nor gets from builtins (``symtable``: every
    scope's implicit globals, so a name used only inside a method counts too)."""
    top = symtable.symtable(text, "<d2c_hf.interop.remote_code>", "exec")
    allowed = {
        s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()
    }
    allowed |= set(dir(builtins)) | {"__file__", "__name__", "__doc__"}
    missing: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        for symbol in table.get_symbols():
            if (
                symbol.is_referenced()
                and (table is top or symbol.is_global())
                and symbol.get_name() not in allowed
            ):
                missing.add(symbol.get_name())
        tables += table.get_children()
    return sorted(missing)


def _render_imports(imports: list[_Import]) -> list[str]:
    """Standard library first, then the rest; ``import x`` before ``from x import y``; sorted by module."""
    statements: dict[tuple[bool, bool, str], list[str]] = {}
    for imp in imports:
        top = (imp.module or imp.name).split(".")[0]
        key = (top not in sys.stdlib_module_names, imp.module is not None, imp.module or imp.name)
        statements.setdefault(key, []).append(imp.name + (f" as {imp.asname}" if imp.asname else ""))
    lines: list[str] = []
    for third_party, is_from, module in sorted(statements):
        if lines and third_party and not any(k[0] for k in statements if k < (True, is_from, module)):
            lines.append("")
        names = ", ".join(dict.fromkeys(statements[(third_party, is_from, module)]))
        lines += [f"from {module} import {names}"] if is_from else [f"import {n}" for n in names.split(", ")]
    return lines
