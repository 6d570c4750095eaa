"""The codec library stays free of the service: eoz/ imports no FastAPI, RQ, Redis or boto3.

Only `eoz serve`, `eoz worker` and `eoz cleanup` reach the service, importing it inside those commands.
"""

from __future__ import annotations

import ast

from tests.workers.servers import ROOT

SERVICE_PACKAGES = {"fastapi", "starlette", "uvicorn", "rq", "redis", "boto3", "botocore", "app", "workers"}
LAZY_SERVICE_IMPORTS = {("cli.py", "cmd_serve"), ("cli.py", "cmd_worker"), ("cli.py", "cmd_cleanup")}


class _Imports(ast.NodeVisitor):
    """(enclosing function or None, imported top-level package) of every import statement."""

    def __init__(self):
        self.scope: str | None = None
        self.found: set[tuple[str | None, str]] = set()

    def visit_FunctionDef(self, node):
        outer, self.scope = self.scope, self.scope or node.name
        self.generic_visit(node)
        self.scope = outer

    def visit_Import(self, node):
        self.found.update((self.scope, a.name.split(".")[0]) for a in node.names)

    def visit_ImportFrom(self, node):
        self.found.add((self.scope, (node.module or "").split(".")[0]))


def test_no_eoz_module_imports_a_service_package_but_the_service_commands():
    found = set()
    for path in (ROOT / "eoz").rglob("*.py"):
        imports = _Imports()
        imports.visit(ast.parse(path.read_text()))
        found |= {(path.relative_to(ROOT / "eoz").as_posix(), scope)
                  for scope, package in imports.found if package in SERVICE_PACKAGES}
    assert found == LAZY_SERVICE_IMPORTS

