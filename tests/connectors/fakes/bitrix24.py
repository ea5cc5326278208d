"""Fake Bitrix24 portal + oauth.bitrix.info (crm-contracts.md §2, checklist §6).

``/rest/{method}[.json]`` with ``auth`` in the query or body (application) and
``/rest/{uid}/{code}/{method}[.json]`` (inbound webhook); the token server at
``/oauth/token/`` (GET, single-use refresh); 401 ``expired_token``; a leaky bucket X=50,
Y=2/s answering 503 ``QUERY_LIMIT_EXCEEDED``; a ``time`` block in every answer; register
with the 30-minute dedup key, finish, show/hide, attachRecord, searchCrmEntities.

As strict as a real portal where the connector could go wrong:

- an inbound webhook may not call the application-only methods (register, finish,
  externalLine.*): 400 ``WRONG_AUTH_TYPE`` "Current authorization type is denied for this
  method" (b24restdocs telephony-external-call-register.md / -finish.md: "works only in
  the context of an application");
- attachRecord with ``RECORD_URL`` makes the *portal* download the file: the fake fetches
  it itself and refuses a non-public address ("Record URL resolves to a non-public
  address and was blocked", telephony-external-call-attach-record.md) unless
  ``public_hosts`` names it; ``FILENAME`` + base64 ``FILE_CONTENT`` is decoded and kept;
- the token response names the portal (``client_endpoint``) and the OAuth server
  (``server_endpoint``) as absolute URLs (crm-contracts.md §2.2); a token works only at
  the portal address it was issued for, and only ``/{oauth_base}oauth/token/`` refreshes
  (``rest_path`` and ``oauth_base`` move them).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from fakes.server import FaultPlan, Reply, Request, json_reply

DEDUP_S = 30 * 60
APP_ONLY = frozenset({"telephony.externalcall.register", "telephony.externalcall.finish",
                      "telephony.externalline.add", "telephony.externalline.update",
                      "telephony.externalline.delete", "event.bind"})
PRIVATE_HOSTS = ("127.", "10.", "192.168.", "localhost", "[::1]", "::1")
STATUS_CODES = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480",
                "402", "423", "OTHER"}


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _time_block(start: float) -> dict[str, Any]:
    now = time.time()
    return {"start": start, "finish": now, "duration": now - start, "processing": now - start,
            "date_start": datetime.fromtimestamp(start).astimezone().isoformat(timespec="seconds"),
            "date_finish": datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
            "operating_reset_at": int(now) + 600, "operating": 0.01}


def _error(status: int, code: str, text: str) -> Reply:
    return json_reply(status, {"error": code, "error_description": text})


def _core(text: str) -> Reply:
    return _error(400, "ERROR_CORE", text)


class FakeBitrix24:
    """State for tests: registrations, register_requests, finished, cards, records, leads."""

    def __init__(self, *, client_id: str = "app.b24", client_secret: str = "b24-secret",
                 webhook: tuple[str, str] = ("1", "whcode0123456789"),
                 capacity: float = 50, drain_per_s: float = 2.0) -> None:
        self.lock = threading.RLock()
        self.client_id, self.client_secret, self.webhook = client_id, client_secret, webhook
        self.capacity, self.drain_per_s = capacity, drain_per_s
        self.faults = FaultPlan()
        self.ids = itertools.count(700)
        self.access: dict[str, float] = {}
        self.refresh: set[str] = set()
        self.entities: list[dict[str, Any]] = []
        self.leads: list[dict[str, Any]] = []
        self.registrations: dict[str, dict[str, Any]] = {}
        self.register_requests: list[dict[str, Any]] = []
        self.finished: dict[str, dict[str, Any]] = {}
        self.card_log: list[tuple[str, str, int, float]] = []
        self.cards: dict[str, set[int]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.public_hosts: set[str] = set()
        """Hosts the fake treats as public for RECORD_URL (a test's HTTPS stand-in)."""
        self.limited = 0
        self._level, self._at = 0.0, time.monotonic()
        self.rest_path = "rest"
        """The portal's REST base path: what token responses name as ``client_endpoint``
        and where the tokens issued from now on are accepted (a token belongs to one
        portal address); a test moves the portal by changing it."""
        self.oauth_base = ""
        """The OAuth server's prefix: token endpoint ``/{oauth_base}oauth/token/``, named
        in token responses as ``server_endpoint`` ``/{oauth_base}rest/``; any other token
        URL is not found."""
        self.portal_of: dict[str, str] = {}

    # --- set-up ----------------------------------------------------------------------
    def issue_tokens(self, ttl: float = 3600) -> tuple[str, str, float]:
        with self.lock:
            access, refresh = secrets.token_hex(16), secrets.token_hex(16)
            self.access[access] = time.time() + ttl
            self.portal_of[access] = self.rest_path
            self.refresh.add(refresh)
            return access, refresh, time.time() + ttl

    def expire_tokens(self) -> None:
        with self.lock:
            self.access = {k: 0.0 for k in self.access}

    def add_entity(self, name: str, phone: str, assigned: int, kind: str = "CONTACT") -> int:
        with self.lock:
            eid = next(self.ids)
            self.entities.append({"CRM_ENTITY_TYPE": kind, "CRM_ENTITY_ID": eid,
                                  "ASSIGNED_BY_ID": assigned, "NAME": name, "PHONE": phone})
            return eid

    # --- HTTP ------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        with self.lock:
            start = time.time()
            fault = self.faults.next()
            if fault is not None:
                return fault
            if req.path.rstrip("/") == f"/{self.oauth_base}oauth/token":
                return self._token(req)
            parts = req.path.strip("/").split("/")
            portal = "/".join(parts[:-1])
            webhook = len(parts) == 4 and parts[0] == "rest"
            if len(parts) < 2 or not (webhook or portal in {self.rest_path,
                                                            *self.portal_of.values()}):
                return _error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
            params = self._params(req)
            method = parts[-1].removesuffix(".json").lower()
            if webhook:
                if (parts[1], parts[2]) != self.webhook:
                    return _error(401, "NO_AUTH_FOUND", "Wrong authorization data")
                if method in APP_ONLY:
                    return _error(400, "WRONG_AUTH_TYPE",
                                  "Current authorization type is denied for this method")
            else:
                token = params.pop("auth", None) or req.arg("auth")
                if token not in self.access or self.portal_of.get(token) != portal:
                    return _error(401, "NO_AUTH_FOUND", "Wrong authorization data")
                if self.access[token] <= time.time():
                    return _error(401, "expired_token", "The access token provided has expired.")
            if not self._admit():
                self.limited += 1
                return _error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return _error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
            reply = handler(params)
            if isinstance(reply, Reply):
                return reply
            return json_reply(200, {"result": reply, "time": _time_block(start)})

    def _params(self, req: Request) -> dict[str, Any]:
        ctype = req.headers.get("content-type", "")
        if req.body and "json" in ctype:
            return dict(req.json() or {})
        form = parse_qs(req.body.decode(), keep_blank_values=True) if req.body else {}
        merged = {**req.query, **form}
        return {k: v[0] if len(v) == 1 else v for k, v in merged.items()}

    def _admit(self) -> bool:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.drain_per_s)
        self._at = now
        if self._level + 1 > self.capacity:
            return False
        self._level += 1
        return True

    def _token(self, req: Request) -> Reply:
        q = {k: v[0] for k, v in req.query.items()}
        if q.get("client_id") != self.client_id or q.get("client_secret") != self.client_secret:
            return _error(401, "invalid_client", "Invalid client credentials")
        if q.get("grant_type") != "refresh_token" or q.get("refresh_token") not in self.refresh:
            return _error(400, "invalid_grant", "Invalid refresh token")
        self.refresh.discard(q["refresh_token"])
        access, refresh, _ = self.issue_tokens()
        origin = f"http://{req.headers.get('host', '')}"
        return json_reply(200, {"access_token": access,
                                "client_endpoint": f"{origin}/{self.rest_path}/",
                                "domain": "oauth.bitrix.info", "expires_in": 3600,
                                "member_id": "a223c6b3710f85df22e9377d6c4f7553",
                                "refresh_token": refresh, "scope": "app",
                                "server_endpoint": f"{origin}/{self.oauth_base}rest/",
                                "status": "T"})

    # --- methods ---------------------------------------------------------------------
    def _search(self, phone: Any) -> dict[str, Any] | None:
        want = _digits(phone)[-10:]
        return next((e for e in self.entities if _digits(e["PHONE"])[-10:] == want), None)

    def _m_telephony_externalcall_searchcrmentities(self, p: dict[str, Any]) -> Any:
        if not p.get("PHONE_NUMBER"):
            return _core("PHONE_NUMBER is empty")
        e = self._search(p["PHONE_NUMBER"])
        if e is None:
            return []
        return [{"CRM_ENTITY_TYPE": e["CRM_ENTITY_TYPE"], "CRM_ENTITY_ID": e["CRM_ENTITY_ID"],
                 "ASSIGNED_BY_ID": e["ASSIGNED_BY_ID"], "NAME": e["NAME"],
                 "ASSIGNED_BY": {"ID": str(e["ASSIGNED_BY_ID"]), "TIMEMAN_STATUS": "OPENED",
                                 "USER_PHONE_INNER": None, "WORK_PHONE": None,
                                 "PERSONAL_PHONE": None, "PERSONAL_MOBILE": None}}]

    def _m_telephony_externalcall_register(self, p: dict[str, Any]) -> Any:
        self.register_requests.append(dict(p))
        if not p.get("USER_ID") and not p.get("USER_PHONE_INNER"):
            return _core("USER_ID or USER_PHONE_INNER should be set")
        if int(p.get("TYPE") or 0) not in range(1, 6):
            return _core("Unknown TYPE")
        if p.get("CALL_START_DATE"):
            try:
                if datetime.fromisoformat(p["CALL_START_DATE"]).tzinfo is None:
                    raise ValueError
            except ValueError:
                return _core("CALL_START_DATE should be in the ISO-8601 format")
        key = tuple(str(p.get(k, "")) for k in ("PHONE_NUMBER", "TYPE", "USER_ID",
                                                "USER_PHONE_INNER", "LINE_NUMBER",
                                                "EXTERNAL_CALL_ID"))
        for cid, reg in self.registrations.items():
            if reg["key"] == key and cid not in self.finished and \
                    time.time() - reg["at"] < DEDUP_S:
                return self._register_result(cid, reg)
        cid = f"externalCall.{secrets.token_hex(16)}.{int(time.time())}"
        entity = self._search(p["PHONE_NUMBER"])
        created = None
        if entity is None and int(p.get("CRM_CREATE") or 0):
            lead_id = self.add_entity(str(p["PHONE_NUMBER"]), str(p["PHONE_NUMBER"]),
                                      int(p.get("USER_ID") or 0), "LEAD")
            self.leads.append({"ID": lead_id, "PHONE": p["PHONE_NUMBER"], "CALL_ID": cid})
            entity, created = self.entities[-1], lead_id
        reg = {"key": key, "at": time.time(), "params": dict(p), "entity": entity,
               "created_lead": created}
        self.registrations[cid] = reg
        if int(p.get("SHOW", 1)) and p.get("USER_ID"):
            self._card(cid, "show", [int(p["USER_ID"])])
        return self._register_result(cid, reg)

    def _register_result(self, cid: str, reg: dict[str, Any]) -> dict[str, Any]:
        e = reg["entity"]
        return {"CALL_ID": cid, "CRM_CREATED_LEAD": reg["created_lead"],
                "CRM_CREATED_ENTITIES": ([{"ENTITY_TYPE": "LEAD", "ENTITY_ID": reg["created_lead"]}]
                                         if reg["created_lead"] else []),
                "CRM_ENTITY_TYPE": e["CRM_ENTITY_TYPE"] if e else None,
                "CRM_ENTITY_ID": e["CRM_ENTITY_ID"] if e else None}

    def _card(self, cid: str, action: str, users: list[int]) -> None:
        shown = self.cards.setdefault(cid, set())
        for user in users:
            self.card_log.append((cid, action, user, time.time()))
            (shown.add if action == "show" else shown.discard)(user)

    def _users(self, p: dict[str, Any], cid: str) -> list[int]:
        raw = p.get("USER_ID")
        if raw in (None, ""):
            return [int(self.registrations[cid]["params"]["USER_ID"])]
        return [int(u) for u in (raw if isinstance(raw, list) else [raw])]

    def _m_telephony_externalcall_show(self, p: dict[str, Any]) -> Any:
        cid = p.get("CALL_ID")
        if cid not in self.registrations or cid in self.finished:
            return False
        self._card(cid, "show", self._users(p, cid))
        return True

    def _m_telephony_externalcall_hide(self, p: dict[str, Any]) -> Any:
        cid = p.get("CALL_ID")
        if cid not in self.registrations:
            return False
        self._card(cid, "hide", self._users(p, cid))
        return True

    def _m_telephony_externalcall_finish(self, p: dict[str, Any]) -> Any:
        cid = p.get("CALL_ID")
        if not isinstance(cid, str):
            return _error(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        if cid not in self.registrations or cid in self.finished:
            return _core("Call is not found (call should be registered prior to finishing)")
        if not p.get("USER_ID") and not p.get("USER_PHONE_INNER"):
            return _core("USER_ID or USER_PHONE_INNER should be set")
        duration = int(p.get("DURATION") or 0)
        status = str(p.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
        if status not in STATUS_CODES:
            return _core("Unknown STATUS_CODE")
        reg = self.registrations[cid]
        row = {"CALL_ID": cid, "EXTERNAL_CALL_ID": reg["params"].get("EXTERNAL_CALL_ID"),
               "PORTAL_USER_ID": int(p.get("USER_ID") or 0),
               "PHONE_NUMBER": str(reg["params"]["PHONE_NUMBER"]),
               "PORTAL_NUMBER": str(reg["params"].get("LINE_NUMBER", "")),
               "INCOMING": str(reg["params"]["TYPE"]), "CALL_DURATION": duration,
               "CALL_START_DATE": {}, "CALL_STATUS": 1 if status == "200" else 0,
               "CALL_VOTE": p.get("VOTE"), "COST": 0, "COST_CURRENCY": "",
               "CALL_FAILED_CODE": status, "CALL_FAILED_REASON": p.get("FAILED_REASON", ""),
               "REST_APP_ID": "3", "REST_APP_NAME": "Tawag", "CRM_ACTIVITY_ID": next(self.ids),
               "COMMENT": None,
               "CRM_ENTITY_TYPE": reg["entity"]["CRM_ENTITY_TYPE"] if reg["entity"] else None,
               "CRM_ENTITY_ID": reg["entity"]["CRM_ENTITY_ID"] if reg["entity"] else None,
               "ID": len(self.finished) + 1}
        self.finished[cid] = row
        self.cards[cid] = set()
        return row

    def _m_telephony_externalcall_attachrecord(self, p: dict[str, Any]) -> Any:
        cid = p.get("CALL_ID")
        if not p.get("FILENAME") and not p.get("RECORD_URL"):
            return _error(400, "", "Required parameters are not set. Request should contain "
                                   "either URL or FILENAME parameter")
        if cid not in self.finished:
            return _error(400, "", "Call is not found in the statistic table. It looks like it "
                                   "is not finished yet.")
        name = str(p.get("FILENAME") or "")
        if name and not name.lower().endswith((".mp3", ".wav")):
            return _core("Wrong file extension. Only wav and mp3 are allowed")
        if p.get("RECORD_URL"):
            content = self._download(str(p["RECORD_URL"]))
        elif "FILE_CONTENT" in p:
            if not p["FILE_CONTENT"]:
                return _core("File content is empty.")
            try:
                content = base64.b64decode(str(p["FILE_CONTENT"]), validate=True)
            except (binascii.Error, ValueError):
                return _core("File content is not properly encoded. Base64 encoding is "
                             "expected.")
        else:
            return {"uploadUrl": "/rest/upload.json?token=telephony", "fieldName": "file"}
        if isinstance(content, Reply):
            return content
        self.records[cid] = {"FILENAME": name, "RECORD_URL": p.get("RECORD_URL"),
                             "content": content}
        return {"FILE_ID": next(self.ids)}

    def _download(self, url: str) -> bytes | Reply:
        """What the portal does with RECORD_URL: fetch it from its own servers."""
        host = urlsplit(url).hostname or ""
        if host not in self.public_hosts and (not host or host.startswith(PRIVATE_HOSTS)):
            return _core("Record URL resolves to a non-public address and was blocked")
        try:
            got = httpx.get(url, timeout=5)
        except httpx.HTTPError:
            return _core("Server returns HTTP error code 0")
        if got.status_code != 200:
            return _core(f"Server returns HTTP error code {got.status_code}")
        return got.content

    # --- click-to-call (contract §2.10) ------------------------------------------------
    def click_to_call(self, user_id: int, phone: str, *, token: str,
                      line_number: str = "") -> tuple[str, bytes]:
        """A user clicks ``phone`` with our app as the default line: the portal registers
        the outgoing call itself (TYPE 1, no EXTERNAL_CALL_ID) and posts
        ONEXTERNALCALLSTART form-encoded with ``auth[application_token]``. Returns the
        CALL_ID and the body to post; the integration must only ``finish`` that call."""
        with self.lock:
            cid = f"externalCall.{secrets.token_hex(16)}.{int(time.time())}"
            entity = self._search(phone)
            params = {"USER_ID": user_id, "PHONE_NUMBER": phone, "TYPE": 1,
                      "LINE_NUMBER": line_number}
            self.registrations[cid] = {"key": ("click", cid), "at": time.time(),
                                       "params": params, "entity": entity,
                                       "created_lead": None}
        data = {"PHONE_NUMBER": phone, "PHONE_NUMBER_INTERNATIONAL": phone, "EXTENSION": "",
                "USER_ID": str(user_id), "CALL_LIST_ID": "0", "LINE_NUMBER": line_number,
                "IS_MOBILE": "0", "CALL_ID": cid,
                "CRM_ENTITY_TYPE": entity["CRM_ENTITY_TYPE"] if entity else "",
                "CRM_ENTITY_ID": str(entity["CRM_ENTITY_ID"]) if entity else ""}
        form = {"event": "ONEXTERNALCALLSTART", "event_handler_id": "1055",
                **{f"data[{k}]": v for k, v in data.items()}, "ts": str(int(time.time())),
                "auth[domain]": "tawag.bitrix24.test", "auth[member_id]": "a223",
                "auth[application_token]": token}
        return cid, urlencode(form).encode()

    # --- views for tests ---------------------------------------------------------------
    def call_for(self, external_id: str) -> list[str]:
        with self.lock:
            return [cid for cid, reg in self.registrations.items()
                    if reg["params"].get("EXTERNAL_CALL_ID") == external_id]
