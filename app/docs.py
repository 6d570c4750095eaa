"""The API's documentation pages, whole without the internet.

Ground segments are often offline, and FastAPI's own /docs and /redoc fetch Swagger UI and
Redoc from a CDN (a blank page offline). Here both pages load their scripts and styles from
this service: the dist files of Swagger UI 5 and Redoc 2 that the ``fastapi-offline``
package ships (pinned in pyproject.toml), mounted under ASSETS_URL. ``/`` sends a visitor
to /docs.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL, REDOC_URL, ASSETS_URL = "/docs", "/redoc", "/docs-assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets; build the app with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    def prefixed(request: Request, path: str) -> str:
        """The path as the client sees it behind a proxy that strips a prefix (root_path)."""
        return request.scope.get("root_path", "").rstrip("/") + path

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> RedirectResponse:
        return RedirectResponse(prefixed(request, DOCS_URL))

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        assets = prefixed(request, ASSETS_URL)
        return get_swagger_ui_html(openapi_url=prefixed(request, app.openapi_url), title=f"{app.title} API",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css",
                                   swagger_favicon_url=f"{assets}/favicon.png", oauth2_redirect_url=None)

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        assets = prefixed(request, ASSETS_URL)
        return get_redoc_html(openapi_url=prefixed(request, app.openapi_url), title=f"{app.title} API",
                              redoc_js_url=f"{assets}/redoc.standalone.js",
                              redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False)
