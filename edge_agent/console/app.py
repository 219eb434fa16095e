"""The nurses' web console: a Starlette app rendered on the server with Jinja2.

Pages are HTML made here; a few lines of JavaScript (``static/console.js``, served by the
agent: no CDN, no build) fetch the live part (``/live``) every two seconds and post the
patient actions. Security, for a page that names patients:

- Loopback by default; another address needs ``[console] pin`` (settings refuse it without),
  and a client that is not on this computer must enter the PIN first (a signed cookie);
  wrong PINs lock that client only, for a growing delay (:mod:`edge_agent.console.lockout`).
- Every POST carries a CSRF token (HMAC of the browser's session cookie, SameSite=Strict)
  and is refused when its ``Origin`` is another site; ``Host`` must be one of the unit's own
  names or addresses, on every bind (DNS rebinding: :mod:`edge_agent.console.hosts`).
- The patient's identifier travels only in POST bodies, never in a URL, and nothing here
  logs a request (uvicorn's access log is off). Pages show it masked; the whole identifier
  is only the answer to a deliberate POST ``/patient/reveal``. Every answer but the static
  files says ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge_agent.console import actions
from edge_agent.console.checklist import Tile, gather, summary, tiles
from edge_agent.console.hosts import HostGuard, UnitHosts
from edge_agent.console.lockout import Outcome, PinLockout
from edge_agent.console.present import encounter_text, loop_text, patient_text, reading_dict
from edge_agent.console.queries import UnitView
from edge_agent.i18n import LANGS, Translator, parse_lang, translator
from edge_agent.settings import Settings

if TYPE_CHECKING:
    from edge_agent.store.writer import Store

log = logging.getLogger(__name__)
LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
CHECKLIST_TTL_S: Final = 10.0  # the store's quick_check is not run at every poll
LANG_NAMES: Final = {"fr": "Français", "ar": "العربية", "en": "English"}


@dataclass
class _Checklist:
    at: float = 0.0
    facts: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Console:
    def __init__(
        self, settings: Settings, secret: bytes | None = None, writer: Store | None = None
    ) -> None:
        self.settings = settings
        self.store = Path(settings.store.path)
        self.writer = writer  # the running agent's store: actions go through its writer
        self.secret = secret or secrets.token_bytes(32)
        self.checklist = _Checklist()
        self.pins = PinLockout()
        folder = resources.files("edge_agent").joinpath("console/templates")
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # --- security --------------------------------------------------------------------------
    def _sign(self, what: str) -> str:
        return hmac.new(self.secret, what.encode(), hashlib.sha256).hexdigest()

    def local(self, request: Request) -> bool:
        return request.client is not None and request.client.host in LOOPBACK

    def authorised(self, request: Request) -> bool:
        if self.local(request) or self.settings.console.pin is None:
            return True
        sid = request.cookies.get("sid", "")
        return bool(sid) and hmac.compare_digest(
            request.cookies.get("auth", ""), self._sign("pin:" + sid)
        )

    def csrf_token(self, sid: str) -> str:
        return self._sign("csrf:" + sid)

    def same_origin(self, request: Request) -> bool:
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host')}"

    async def csrf_ok(self, request: Request, form: dict[str, Any]) -> bool:
        sid = request.cookies.get("sid", "")
        sent = form.get("csrf", "")
        token = request.headers.get("x-csrf-token") or str(
            sent[-1] if isinstance(sent, list) else sent
        )
        return (
            bool(sid)
            and self.same_origin(request)
            and hmac.compare_digest(token, self.csrf_token(sid))
        )

    # --- data ------------------------------------------------------------------------------
    async def facts(self) -> Any:
        """The checklist's facts, at most every CHECKLIST_TTL_S (the readings are fresh on
        every poll: see :meth:`live_context`)."""
        cl = self.checklist
        async with cl.lock:
            if cl.facts is None or time.monotonic() - cl.at > CHECKLIST_TTL_S:
                cl.facts = await asyncio.to_thread(
                    gather, self.settings, ble_seconds=None, probe_broker=None
                )
                cl.at = time.monotonic()
            return cl.facts

    async def live_context(self, tr: Translator) -> dict[str, Any]:
        from dataclasses import replace

        from edge_agent.console.checklist import with_liveness
        from edge_agent.console.queries import unit_view
        from edge_agent.errors import EdgeAgentError
        from edge_agent.service.heartbeat import ask_any

        now = datetime.now(UTC)
        facts = await self.facts()
        # Asked at every poll: the cached checklist must not keep a dead agent "running".
        live = await asyncio.to_thread(ask_any, self.store)
        view: UnitView = facts.view
        if self.store.exists():
            with contextlib.suppress(EdgeAgentError):
                view = await asyncio.to_thread(
                    unit_view, self.store, [d.id for d in self.settings.devices]
                )
        facts = with_liveness(replace(facts, view=view, now=now), live)
        found: list[Tile] = tiles(self.settings, facts, tr)
        by_key = {t.key: t for t in found}
        devices = [
            {
                "id": d.id,
                "tile": by_key.get(f"device:{d.id}"),
                "last": (
                    reading_dict(tr, view.last_by_device[d.id], now)
                    if d.id in view.last_by_device
                    else None
                ),
            }
            for d in self.settings.devices
            if d.enabled
        ]
        return {
            "t": tr,
            "tiles": found,
            "summary": summary(tr, found),
            "ready": not any(t.status == "fail" for t in found),
            "devices": devices,
            "patients_available": view.patients_available,
            "encounter": view.encounter,
            "patient_text": (
                encounter_text(tr, view.encounter, now)
                if view.encounter
                else patient_text(tr, view, now)
            ),
            "patient_readings": [reading_dict(tr, r, now) for r in view.encounter_readings],
            "recent": [reading_dict(tr, r, now) for r in view.recent],
            "backlog": by_key["backlog"],
            "link": by_key["link"],
            "answering": live.answering,
            "loop": (
                tr("status.loop") + (" : " if tr.lang == "fr" else ": ") + loop_text(tr, facts.loop)
            )
            if facts.loop
            else "",
        }

    def lang(self, request: Request) -> Translator:
        chosen = request.query_params.get("lang") or request.cookies.get("lang")
        return translator(chosen, parse_lang(self.settings.unit.language))

    def render(self, name: str, **context: Any) -> str:
        return self.templates.get_template(name).render(**context)

    # --- routes ----------------------------------------------------------------------------
    def _session(self, request: Request, response: Response) -> str:
        sid = request.cookies.get("sid") or secrets.token_urlsafe(24)
        response.set_cookie("sid", sid, httponly=True, samesite="strict", secure=https(request))
        return sid

    def fingerprint(self, request: Request) -> str:
        """The HTTPS certificate's fingerprint, for the unit's own screen only (loopback): the
        nurse compares it with her tablet's; a page that crossed the network proves nothing."""
        c = self.settings.console
        if not c.tls or not self.local(request):
            return ""
        from edge_agent.console.tls import read_certificate

        try:
            return read_certificate(Path(c.cert_file)).fingerprint
        except (OSError, ValueError):
            return ""

    async def page(self, request: Request) -> Response:
        tr = self.lang(request)
        if not self.authorised(request):
            return self.login_page(request, tr)
        response = HTMLResponse("")
        sid = self._session(request, response)
        body = self.render(
            "index.html",
            csrf=self.csrf_token(sid),
            lang=tr.lang,
            dir=tr.direction,
            langs=[(lang, LANG_NAMES[lang]) for lang in LANGS],
            unit=self.settings.unit.id,
            fingerprint=self.fingerprint(request),
            **await self.live_context(tr),
        )
        response.body = body.encode()
        response.headers["content-length"] = str(len(response.body))
        response.set_cookie("lang", tr.lang, samesite="strict", secure=https(request))
        return response

    def login_page(
        self, request: Request, tr: Translator, error: str = "", status: int = 200
    ) -> Response:
        response = HTMLResponse("", status_code=status)
        sid = self._session(request, response)
        body = self.render(
            "login.html",
            t=tr,
            lang=tr.lang,
            dir=tr.direction,
            csrf=self.csrf_token(sid),
            error=error,
        )
        response.body = body.encode()
        response.headers["content-length"] = str(len(response.body))
        return response

    async def login(self, request: Request) -> Response:
        tr = self.lang(request)
        form = await form_fields(request)
        if not await self.csrf_ok(request, form):
            return JSONResponse({"ok": False, "message": tr("action.refused")}, 403)
        pin = self.settings.console.pin or ""
        correct = hmac.compare_digest((form.get("pin") or [""])[-1].encode(), pin.encode())
        client = request.client.host if request.client is not None else ""
        decision = self.pins.attempt(client, correct)  # decides and counts: no await between
        if decision.outcome is Outcome.LOCKED:
            page = self.login_page(
                request, tr, tr.plural("web.pin_locked", decision.retry_after_s), 429
            )
            page.headers["retry-after"] = str(decision.retry_after_s)
            return page
        if decision.outcome is Outcome.WRONG_NOW_LOCKED:
            return self.login_page(
                request, tr, tr.plural("web.pin_locked", decision.retry_after_s), 401
            )
        if decision.outcome is Outcome.WRONG:
            return self.login_page(request, tr, tr("web.pin_wrong"), 401)
        response = Response(status_code=303, headers={"location": "/"})
        sid = request.cookies.get("sid", "")
        response.set_cookie(
            "auth",
            self._sign("pin:" + sid),
            httponly=True,
            samesite="strict",
            secure=https(request),
        )
        return response

    async def live(self, request: Request) -> Response:
        if not self.authorised(request):
            return Response(status_code=401)
        tr = self.lang(request)
        return HTMLResponse(self.render("live.html", **await self.live_context(tr)))

    async def action(self, request: Request) -> Response:
        tr = self.lang(request)
        if not self.authorised(request):
            return JSONResponse({"ok": False, "message": tr("action.refused")}, 401)
        form = await form_fields(request)
        fields = {k: v[-1] for k, v in form.items()}
        if not await self.csrf_ok(request, fields):
            return JSONResponse({"ok": False, "message": tr("action.refused")}, 403)
        what = request.path_params["what"]
        if what == "open":
            patients = self.settings.patients
            result = await asyncio.to_thread(
                functools.partial(
                    actions.open_encounter,
                    self.store,
                    fields.get("identifier", ""),
                    fields.get("system") or None,
                    dict(patients.systems),
                    patients.default,
                    patients.practitioner_role,
                    writer=self.writer,
                )
            )
        elif what == "close":
            result = await asyncio.to_thread(
                actions.close_encounter, self.store, writer=self.writer
            )
        elif what == "assign":
            ids = form.get("reading", [])
            result = await asyncio.to_thread(actions.assign, self.store, ids, writer=self.writer)
        elif what == "reveal":  # the nurse's deliberate "show the identifier"
            shown = await asyncio.to_thread(actions.reveal, self.store)
            log.info("console: patient reveal: %s", shown.result.message)  # never the value
            return JSONResponse(
                {
                    "ok": shown.result.ok,
                    "message": tr(shown.result.message),
                    "identifier": shown.identifier,
                },
                200 if shown.result.ok else 409,
            )
        else:
            return Response(status_code=404)
        log.info("console: patient %s: %s", what, result.message)  # never the identifier
        message = (
            tr.plural(result.message, result.count)
            if result.message == "action.assigned"
            else tr(result.message)
        )
        return JSONResponse({"ok": result.ok, "message": message}, 200 if result.ok else 409)


def https(request: Request) -> bool:
    """Cookies are ``Secure`` on HTTPS (the LAN console): never sent back over plain HTTP."""
    return request.url.scheme == "https"


async def form_fields(request: Request) -> dict[str, list[str]]:
    """A small urlencoded form (the console's only kind), without python-multipart."""
    from urllib.parse import parse_qs

    if (
        request.headers.get("content-type", "").split(";")[0].strip()
        != "application/x-www-form-urlencoded"
    ):
        return {}
    body = await request.body()
    return parse_qs(body[:65536].decode("utf-8", "replace"), max_num_fields=600)


def create_app(
    settings: Settings, secret: bytes | None = None, writer: Store | None = None
) -> Starlette:
    """``writer``: the running agent's store, when the console is served inside the agent."""
    console = Console(settings, secret, writer)
    static = resources.files("edge_agent").joinpath("console/static")

    async def guard(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = (
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
        )
        # same-origin, not no-referrer: under no-referrer a browser's form POST says
        # "Origin: null", which the same-origin check refuses (the PIN form in Chromium got
        # 403); no URL of the console ever goes to another site either way.
        response.headers["referrer-policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            # every page and answer may name the patient: never in the browser's cache
            response.headers["cache-control"] = "no-store"
        return response

    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    c = settings.console
    hosts = UnitHosts(c.host, c.port, tuple(c.allowed_hosts))
    return Starlette(
        routes=[
            Route("/", console.page),
            Route("/live", console.live),
            Route("/login", console.login, methods=["POST"]),
            Route("/patient/{what}", console.action, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ],
        middleware=[
            Middleware(HostGuard, hosts=hosts),  # outermost: before any handler
            Middleware(BaseHTTPMiddleware, dispatch=guard),
        ],
    )
