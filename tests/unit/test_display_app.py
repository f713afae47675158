"""The display app without Kafka: login, roles, CSRF, acknowledge, pages, coalesced updates."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from schemas.alerts import AlertAck
from services.display.app import STATIC_DIR, Hub, create_app
from services.display.auth import (
    Access,
    DisplayConfigError,
    DisplaySettings,
    Role,
    User,
    UsersFileError,
    hash_password,
    load_users,
    resolve_access,
    verify_password,
)
from services.display.state import UnitState, make_alert

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET = "s" * 40
PASSWORDS = {"vera": "viewer-pass-1", "carl": "clinician-pass-2", "ada": "admin-pass-3"}
ROLES: dict[str, Role] = {"vera": "viewer", "carl": "clinician", "ada": "admin"}


@pytest.fixture(scope="module")
def users() -> dict[str, User]:
    return {
        name: User(name, ROLES[name], hash_password(pw, n=2**10)) for name, pw in PASSWORDS.items()
    }


class Published:
    """Records what the app hands to Kafka (the real publisher is tested on a broker)."""

    def __init__(self) -> None:
        self.acks: list[AlertAck] = []
        self.fail = False

    def __call__(self, ack: AlertAck) -> None:
        if self.fail:
            raise OSError("broker down")
        self.acks.append(ack)


@pytest.fixture
def setup(users: dict[str, User]) -> Iterator[tuple[TestClient, UnitState, Published]]:
    state = UnitState()
    state.apply_alert(make_alert("alert-1", "p1", "high", T0))
    published = Published()
    app = create_app(
        state, threading.Lock(), Access(SECRET, users, False, {}), published, tick_s=0.05
    )
    with TestClient(app, base_url="http://display.test") as client:
        yield client, state, published


def login(client: TestClient, name: str, password: str | None = None) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/login",
        data={"username": name, "password": password or PASSWORDS[name], "csrf": token[1]},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert found is not None
    return found[1]


def test_passwords_are_salted_scrypt_hashes() -> None:
    one, two = hash_password("same", n=2**10), hash_password("same", n=2**10)
    assert one != two
    assert one.startswith("scrypt$1024$8$1$")
    assert verify_password("same", one)
    assert not verify_password("Same", one)
    assert not verify_password("same", "plaintext")
    assert not verify_password("same", "scrypt$x")


def test_users_file_refuses_plain_passwords_and_unknown_roles(tmp_path: Path) -> None:
    good = tmp_path / "users.toml"
    hashed = hash_password("x", n=2**10)
    good.write_text(f'[[user]]\nname = "carl"\nrole = "clinician"\npassword_hash = "{hashed}"\n')
    assert load_users(good)["carl"].role == "clinician"
    plain = tmp_path / "plain.toml"
    plain.write_text('[[user]]\nname = "carl"\nrole = "clinician"\npassword_hash = "hunter2"\n')
    with pytest.raises(UsersFileError, match="scrypt hash"):
        load_users(plain)
    role = tmp_path / "role.toml"
    role.write_text('[[user]]\nname = "x"\nrole = "root"\npassword_hash = "scrypt$1"\n')
    with pytest.raises(UsersFileError, match="role must be one of"):
        load_users(role)


def test_no_default_secret_or_users_outside_development(tmp_path: Path) -> None:
    with pytest.raises(DisplayConfigError, match="VIGIL_DISPLAY_SECRET is not set"):
        resolve_access(DisplaySettings(env="production"))
    with pytest.raises(DisplayConfigError, match="VIGIL_DISPLAY_USERS is not set"):
        resolve_access(DisplaySettings(env="production", display_secret=SECRET))
    with pytest.raises(DisplayConfigError, match="32"):
        resolve_access(DisplaySettings(env="development", display_secret="short"))
    demo = resolve_access(DisplaySettings(env="development"))
    assert demo.development
    assert len(demo.secret) >= 32
    assert set(demo.demo_passwords) == {"viewer", "clinician", "admin"}
    assert verify_password(demo.demo_passwords["clinician"], demo.users["clinician"].password_hash)
    assert resolve_access(DisplaySettings(env="development")).secret != demo.secret


def test_pages_and_the_live_stream_need_a_login_outside_development(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, _ = setup
    response = client.get("/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login?next=/")
    assert client.get("/events").status_code == 401
    assert client.get("/api/patient/p1").status_code == 401


def test_a_wrong_password_or_a_login_without_csrf_token_is_refused(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, _ = setup
    client.get("/login")
    no_token = client.post("/login", data={"username": "carl", "password": PASSWORDS["carl"]})
    assert no_token.status_code == 403
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    wrong = client.post("/login", data={"username": "carl", "password": "wrong", "csrf": token[1]})
    assert wrong.status_code == 401
    assert "wrong password" in wrong.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_never_redirects_to_another_site(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, _ = setup
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    response = client.post(
        "/login",
        data={"username": "vera", "password": PASSWORDS["vera"], "csrf": token[1],
              "next": "//evil.example/"},
        follow_redirects=False,
    )  # fmt: skip
    assert response.headers["location"] == "/"


def test_the_overview_is_served_with_a_strict_csp_and_no_external_assets(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, _ = setup
    login(client, "vera")
    page = client.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    cookie = page.headers.get("set-cookie", "") or ""
    assert "samesite=strict" in cookie.lower() or cookie == ""
    assert 'data-can-ack="false"' in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    assert all(a.startswith(("/", "#")) for a in assets)
    for asset in STATIC_DIR.iterdir():
        text = asset.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), asset.name
        assert client.get(f"/static/{asset.name}").status_code == 200


def test_a_viewer_cannot_acknowledge(setup: tuple[TestClient, UnitState, Published]) -> None:
    client, state, published = setup
    login(client, "vera")
    response = client.post("/api/alerts/alert-1/ack", headers={"x-csrf-token": csrf_of(client)})
    assert response.status_code == 403
    assert "cannot acknowledge" in response.json()["error"]
    assert published.acks == []
    assert state.alarm_list()[0]["acknowledged_by"] is None


def test_a_clinicians_acknowledgement_is_published_with_who_and_when_and_shown(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, state, published = setup
    login(client, "carl")
    response = client.post("/api/alerts/alert-1/ack", headers={"x-csrf-token": csrf_of(client)})
    assert response.status_code == 200, response.text
    [ack] = published.acks
    assert (ack.alert_id, ack.patient_id, ack.user, ack.role, ack.action) == (
        "alert-1", "p1", "carl", "clinician", "acknowledge",
    )  # fmt: skip
    assert abs((datetime.now(UTC) - ack.at).total_seconds()) < 10
    assert state.alarm_list()[0]["acknowledged_by"] == "carl"
    assert [a.ack_id for a in state.audit] == [ack.ack_id]


def test_acknowledge_needs_the_csrf_token_and_a_same_origin_request(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, published = setup
    login(client, "carl")
    token = csrf_of(client)
    assert client.post("/api/alerts/alert-1/ack").status_code == 403
    assert (
        client.post("/api/alerts/alert-1/ack", headers={"x-csrf-token": "x" * 43}).status_code
        == 403
    )
    cross = client.post(
        "/api/alerts/alert-1/ack",
        headers={"x-csrf-token": token, "origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    assert published.acks == []
    same = client.post(
        "/api/alerts/alert-1/ack",
        headers={"x-csrf-token": token, "origin": "http://display.test"},
    )
    assert same.status_code == 200


def test_acknowledging_unknown_or_unrecordable_alerts_says_so(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, state, published = setup
    login(client, "ada")
    token = csrf_of(client)
    assert client.post("/api/alerts/nope/ack", headers={"x-csrf-token": token}).status_code == 404
    published.fail = True
    failed = client.post("/api/alerts/alert-1/ack", headers={"x-csrf-token": token})
    assert failed.status_code == 503
    assert state.alarm_list()[0]["acknowledged_by"] is None  # not shown if not recorded


def test_the_audit_of_acknowledgements_is_for_admins(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, _ = setup
    login(client, "carl")
    client.post("/api/alerts/alert-1/ack", headers={"x-csrf-token": csrf_of(client)})
    assert client.get("/api/audit").status_code == 403
    login(client, "ada")
    rows = client.get("/api/audit").json()["acknowledgements"]
    assert [(r["user"], r["role"]) for r in rows] == [("carl", "clinician")]


def test_development_guests_may_watch_but_not_acknowledge(users: dict[str, User]) -> None:
    state = UnitState()
    state.apply_alert(make_alert("alert-1", "p1", "high", T0))
    app = create_app(state, threading.Lock(), Access(SECRET, users, True, {}), Published())
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "guest (development" in page.text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None
        refused = client.post("/api/alerts/alert-1/ack", headers={"x-csrf-token": token[1]})
        assert refused.status_code == 401


def test_the_patient_api_gives_trends_and_why(
    setup: tuple[TestClient, UnitState, Published],
) -> None:
    client, _, _ = setup
    login(client, "vera")
    detail = client.get("/api/patient/p1?hours=6").json()
    assert detail["alerts"][0]["explanation"] == ["1-min median MAP 58 < 65 mmHg for 5 min"]
    assert detail["alerts"][0]["thresholds"] == {"map_median_1min_mmhg": 65.0}
    assert "map_mmhg" in detail["series"]
    assert client.get("/api/patient/unknown").status_code == 404
    assert client.get("/patient/p1").status_code == 200


def test_one_coalesced_update_per_tick_carries_only_changed_tiles() -> None:
    state = UnitState()
    for n in range(200):
        state.apply_alert(make_alert(f"a{n}", f"p{n:03d}", "low", T0))
    hub = Hub(state, threading.Lock(), 0.5)
    hub.full()
    assert hub.tick() is not None  # the 200 initial changes, once
    assert hub.tick() is None
    for _ in range(50):  # many messages for two beds between ticks
        state.apply_alert(make_alert("x", "p007", "high", T0))
        state.apply_alert(make_alert("y", "p150", "medium", T0))
    message = hub.tick()
    assert message is not None
    assert message.startswith(b"event: delta\n")
    update = json.loads(message.split(b"data: ", 1)[1])
    assert sorted(update["beds"]) == ["p007", "p150"]
    assert update["alarms"][0]["alert_id"] == "x"
    assert "order" not in update
    assert hub.tick() is None


def test_vigil_display_refuses_to_start_without_a_secret_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from services.cli_display import display_group

    for name in ("VIGIL_ENV", "VIGIL_DISPLAY_SECRET", "VIGIL_DISPLAY_USERS"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(display_group, ["--port", "0"])
    assert result.exit_code == 1
    assert "VIGIL_DISPLAY_SECRET is not set" in result.output


def test_vigil_display_hash_password_prints_a_verifiable_hash() -> None:
    from click.testing import CliRunner

    from services.cli_display import display_group

    result = CliRunner().invoke(
        display_group, ["hash-password"], input="long enough pw\nlong enough pw\n"
    )
    assert result.exit_code == 0, result.output
    assert verify_password("long enough pw", result.output.strip().splitlines()[-1])
