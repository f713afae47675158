"""The central-station ASGI app (starlette): pages, live updates (SSE), login, acknowledge.

Live updates are coalesced: a ticker takes the changed beds and whether the alarm
list changed from :class:`UnitState` every ``tick_s`` seconds, serialises one
update with only those tiles, and hands the same bytes to every connected page.
A page that falls behind gets a full resynchronisation instead of a backlog.

Security: sessions are signed cookies (SameSite=Strict, HttpOnly; Secure with
``VIGIL_DISPLAY_SECURE_COOKIES``), every state-changing request needs the
session's CSRF token (form field or ``X-CSRF-Token``) and a same-origin
``Origin`` when the browser sends one; a strict Content-Security-Policy allows
only the app's own scripts and styles (no CDN, works offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.alerts import AlertAck
from services.display.auth import Access, Role, can_acknowledge, verify_password
from services.display.state import ORGANS_SHOWN, TILE_NUMBERS, UnitState
from streams.features.catalog import FEATURES

log = logging.getLogger(__name__)
audit_log = logging.getLogger("vigil.display.audit")

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
QUEUE_DEPTH = 8
HEARTBEAT_S = 15.0

AckPublisher = Callable[[AlertAck], None]


@dataclass
class Viewer:
    """Who is looking: a logged-in user, or the development-mode guest."""

    name: str
    role: Role
    guest: bool = False


@dataclass
class Hub:
    """Connected pages and the coalescing ticker."""

    state: UnitState
    lock: threading.Lock
    tick_s: float
    queues: set[asyncio.Queue[bytes | None]] = field(default_factory=set)
    order: list[str] = field(default_factory=list)
    updates_sent: int = 0
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # tick now (an ack)

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self.closing = True
        for queue in list(self.queues):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(b"")

    def full(self) -> bytes:
        with self.lock:
            overview = self.state.overview()
        self.order = list(overview["order"])
        return _sse("full", overview)

    def tick(self) -> bytes | None:
        """One coalesced update (changed tiles, alarm list if changed), or None."""
        with self.lock:
            beds, alarms_changed = self.state.take_changes()
            if not beds and not alarms_changed:
                return None
            order = self.state.bed_order()
            update: dict[str, Any] = {"beds": self.state.tiles(b for b in beds if b in order)}
            if order != self.order:
                update["order"] = order
            if alarms_changed:
                update["alarms"] = self.state.alarm_list()
        self.order = order
        return _sse("delta", update)

    def broadcast(self, message: bytes) -> None:
        for queue in list(self.queues):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # too slow: drop its backlog, resynchronise it
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)
        self.updates_sent += 1

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.tick_s)
            self.wake.clear()
            message = self.tick()
            if message is not None and self.queues:
                self.broadcast(message)


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class SecurityHeaders:
    """Adds CSP and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    state: UnitState,
    lock: threading.Lock,
    access: Access,
    publish_ack: AckPublisher,
    *,
    tick_s: float = 0.5,
    secure_cookies: bool = False,
    session_hours: float = 12.0,
    status: Callable[[], dict[str, Any]] = lambda: {},
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    """The display app over ``state`` (fed elsewhere, guarded by ``lock``)."""
    hub = Hub(state, lock, tick_s)

    def viewer_of(request: Request) -> Viewer | None:
        name = request.session.get("user")
        if isinstance(name, str):
            user = access.users.get(name)
            if user is not None and request.session.get("role") == user.role:
                return Viewer(user.name, user.role)
            request.session.clear()  # user removed or role changed: log in again
        if access.development:
            return Viewer("guest", "viewer", guest=True)
        return None

    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return token

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        parts = urlsplit(origin)
        return parts.netloc == request.headers.get("host") and parts.scheme in ("http", "https")

    def csrf_ok(request: Request, supplied: object) -> bool:
        expected = request.session.get("csrf")
        return (
            isinstance(expected, str)
            and isinstance(supplied, str)
            and hmac.compare_digest(expected.encode(), supplied.encode())
            and same_origin(request)
        )

    def page(request: Request, template: str, viewer: Viewer | None, **extra: Any) -> HTMLResponse:
        html = TEMPLATES.get_template(template).render(
            viewer=viewer,
            csrf=csrf_token(request),
            can_ack=viewer is not None and can_acknowledge(viewer.role),
            development=access.development,
            **extra,
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    def to_login(request: Request) -> Response:
        if request.url.path.startswith(("/api/", "/events")):
            return JSONResponse({"error": "login required"}, status_code=401)
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    async def overview(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return to_login(request)
        numbers = [(*row, f"{row[2]}: {FEATURES[row[1]].description}") for row in TILE_NUMBERS]
        return page(request, "overview.html", viewer, numbers=numbers, organs=ORGANS_SHOWN)

    async def patient(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return to_login(request)
        return page(request, "patient.html", viewer, patient_id=request.path_params["pid"])

    async def patient_api(request: Request) -> Response:
        if viewer_of(request) is None:
            return to_login(request)
        try:
            hours = min(24.0, max(1.0, float(request.query_params.get("hours", "6"))))
        except ValueError:
            return JSONResponse({"error": "hours must be a number"}, status_code=400)
        with lock:
            detail = state.patient_detail(request.path_params["pid"], hours)
        if detail is None:
            return JSONResponse({"error": "unknown patient"}, status_code=404)
        return JSONResponse(detail, headers={"cache-control": "no-store"})

    async def overview_api(request: Request) -> Response:
        if viewer_of(request) is None:
            return to_login(request)
        with lock:
            return JSONResponse(state.overview(), headers={"cache-control": "no-store"})

    async def events(request: Request) -> Response:
        if viewer_of(request) is None:
            return to_login(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_DEPTH)

        async def stream() -> AsyncIterator[bytes]:
            hub.queues.add(queue)
            try:
                yield b"retry: 2000\n\n" + hub.full()
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield b": ping\n\n"
                        continue
                    if message == b"" or hub.closing:
                        return
                    yield hub.full() if message is None else message
            finally:
                hub.queues.discard(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def acknowledge(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None or viewer.guest:
            return JSONResponse({"error": "log in to acknowledge"}, status_code=401)
        if not csrf_ok(request, request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "CSRF check failed"}, status_code=403)
        if not can_acknowledge(viewer.role):
            audit_log.warning("refused ack by %s (role %s)", viewer.name, viewer.role)
            return JSONResponse(
                {"error": f"role {viewer.role} cannot acknowledge alarms"}, status_code=403
            )
        alert_id = request.path_params["alert_id"]
        with lock:
            alarm = state.alarms.get(alert_id)
            patient_id = alarm.patient_id if alarm else None
            active = alarm.active if alarm else False
        if patient_id is None:
            return JSONResponse({"error": "unknown alert"}, status_code=404)
        if not active:
            return JSONResponse({"error": "alert has ended"}, status_code=409)
        ack = AlertAck(
            ack_id=str(uuid.uuid4()),
            alert_id=alert_id,
            patient_id=patient_id,
            action="acknowledge",
            user=viewer.name,
            role=viewer.role,
            at=clock(),
        )
        try:
            await run_in_threadpool(publish_ack, ack)
        except Exception as exc:
            log.error("acknowledgement not recorded: %s", exc)
            return JSONResponse(
                {"error": "acknowledgement not recorded (Kafka unavailable); try again"},
                status_code=503,
            )
        with lock:
            state.apply_ack(ack)  # everyone sees it now, before the worker echoes it
        hub.wake.set()
        audit_log.info("ack %s of alert %s by %s (%s)", ack.ack_id, alert_id, ack.user, ack.role)
        return JSONResponse({"ack_id": ack.ack_id, "user": ack.user, "at": ack.at.isoformat()})

    async def audit(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return to_login(request)
        if viewer.role != "admin":
            return JSONResponse({"error": "admins only"}, status_code=403)
        with lock:
            rows = [a.model_dump(mode="json") for a in reversed(state.audit)]
        return JSONResponse({"acknowledgements": rows})

    async def login_form(request: Request) -> Response:
        return page(request, "login.html", viewer_of(request), error=None, next=_next(request))

    async def login(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            response = page(
                request, "login.html", None, error="Session expired; try again.", next="/"
            )
            response.status_code = 403
            return response
        name, password = form.get("username"), form.get("password")
        user = access.users.get(name) if isinstance(name, str) else None
        ok = (
            user is not None
            and isinstance(password, str)
            and await run_in_threadpool(verify_password, password, user.password_hash)
        )
        target = _safe_next(form.get("next"))
        if not ok or user is None:
            audit_log.warning("failed login for %r", name if isinstance(name, str) else "?")
            await asyncio.sleep(0.5)
            response = page(
                request, "login.html", None, error="Unknown user or wrong password.", next=target
            )
            response.status_code = 401
            return response
        request.session.clear()  # a fresh session (and CSRF token) on every login
        request.session.update(
            {"user": user.name, "role": user.role, "csrf": secrets.token_urlsafe(32)}
        )
        audit_log.info("login %s (%s)", user.name, user.role)
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return JSONResponse({"error": "CSRF check failed"}, status_code=403)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def health(_request: Request) -> Response:
        return JSONResponse({"ok": True, "pages": len(hub.queues), **status()})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ticker = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            hub.close()

    app = Starlette(
        routes=[
            Route("/", overview),
            Route("/patient/{pid:str}", patient),
            Route("/api/overview", overview_api),
            Route("/api/patient/{pid:str}", patient_api),
            Route("/api/alerts/{alert_id:str}/ack", acknowledge, methods=["POST"]),
            Route("/api/audit", audit),
            Route("/events", events),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/healthz", health),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=access.secret,
                session_cookie="vigil_session",
                max_age=int(session_hours * 3600),
                same_site="strict",
                https_only=secure_cookies,
            ),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


def _safe_next(value: object) -> str:
    """Only a local path: never redirect to another site after login."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//"):
        return value if "\\" not in value else "/"
    return "/"


def _next(request: Request) -> str:
    return _safe_next(request.query_params.get("next"))
