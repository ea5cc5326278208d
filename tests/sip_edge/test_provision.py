"""edge.provision without a running edge: validation with file:line, compiling, planning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge import provision

GOOD = """\
[tenant.acme]
domain = "pbx.test"
company_number = "+74951230000"
trunk = "127.0.0.1:5090"

[tenant.acme.extension.101]
password = "secret-101"
mobile = "+79161234567"
forward = { no_answer = "mobile", busy = "ext:102" }

[tenant.acme.extension.102]
password = "secret-102"
no_answer_timeout = 15

[tenant.acme.group.sales]
strategy = "sequential"
members = ["102", "101"]

[tenant.acme.did."+74951230001"]
to = "group:sales"
record = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tawag.toml"
    path.write_text(text)
    return path


def test_a_good_file_has_no_errors(tmp_path: Path) -> None:
    assert provision.check(write(tmp_path, GOOD)) == []


@pytest.mark.parametrize(
    ("broken", "line", "message"),
    [
        (GOOD.replace('"127.0.0.1:5090"', '"carrier"'), 4, "trunk: expected"),
        (GOOD.replace('busy = "ext:102"', 'busy = "ext:199"'), 9,
         "forward busy: 'ext:199' is not provisioned"),
        (GOOD.replace('password = "secret-102"', 'password = "x"'), 12, "extension 102: password"),
        (GOOD.replace("no_answer_timeout = 15", "no_answer_timeout = 0"), 13,
         "no_answer_timeout: whole seconds"),
        (GOOD.replace('"sequential"', '"random"'), 16, "strategy must be one of"),
        (GOOD.replace('members = ["102", "101"]', 'members = ["102", "555"]'), 17,
         "member '555' is not an extension"),
        (GOOD.replace('to = "group:sales"', 'to = "+79161234567"'), 20,
         "a DID lands on an extension or group"),
        (GOOD.replace("record = true", 'record = "yes"'), 21, "record: true or false"),
        (GOOD.replace('mobile = "+79161234567"\n', ""), 8, '"mobile" but the extension has no'),
        (GOOD + "colour = 1\n", 22, "unknown key 'colour'"),
        (GOOD.replace('domain = "pbx.test"', 'domain = "pbx.test'), 2, "not valid TOML"),
    ],
)
def test_each_defect_names_file_line_and_what_is_wrong(
    tmp_path: Path, broken: str, line: int, message: str
) -> None:
    path = write(tmp_path, broken)

    errors = provision.check(path)

    assert [e.line for e in errors] == [line], errors
    assert message in errors[0].message
    assert str(errors[0]).startswith(f"{path}:{line}: ")


def test_load_refuses_a_bad_file_with_all_its_errors(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('"sequential"', '"x"').replace("= 15", "= -1"))

    with pytest.raises(provision.ProvisioningFailed) as failed:
        provision.load(path)

    assert len(failed.value.errors) == 2


def test_compiled_state_holds_ha1_not_passwords_and_resolves_targets(tmp_path: Path) -> None:
    state = provision.load(write(tmp_path, GOOD))["acme"]

    assert state.creds["101@pbx.test"] == provision.ha1("101", "pbx.test", "secret-101")
    assert b"secret-101" not in state.to_json()
    assert state.strings["ext:pbx.test:101:fwd:no_answer"] == "tel:+79161234567"
    assert state.strings["ext:pbx.test:101:fwd:busy"] == "ext:102"
    assert state.ints["ext:pbx.test:101:timeout"] == provision.DEFAULT_NO_ANSWER_S
    assert state.ints["ext:pbx.test:102:timeout"] == 15
    assert state.strings["group:pbx.test:sales:mode"] == "serial"
    assert [state.strings[f"group:pbx.test:sales:m{i}"] for i in range(2)] == ["102", "101"]
    assert (state.strings["did:74951230001"], state.strings["did:74951230001:to"]) == (
        "pbx.test", "group:sales")
    assert state.ints["did:74951230001:record"] == 1
    assert state.strings["trunksrc:127.0.0.1:5090"] == "pbx.test"
    assert provision.TenantState.from_json(state.to_json()) == state


def test_ha1_is_md5_of_user_realm_password() -> None:
    # RFC 2617 3.2.2.2; value computed with `printf '101:pbx.test:secret' | md5sum`
    assert provision.ha1("101", "pbx.test", "secret") == "43ba4b6a024bbbd4056fd3e58d52ed38"


def test_plan_sets_everything_then_deletes_only_the_tenants_stale_keys(tmp_path: Path) -> None:
    state = provision.load(write(tmp_path, GOOD))["acme"]
    current = [
        ("creds", "103@pbx.test", "old"),          # removed extension of this tenant
        ("creds", "103@other.test", "keep"),       # another tenant's
        ("pbx", "ext:pbx.test:103", 1),
        ("pbx", "did:74950000000", "pbx.test"),    # a DID this tenant gave up
        ("pbx", "did:74950000000:to", "ext:103"),
        ("pbx", "did:74959999999", "other.test"),  # another tenant's DID
        ("pbx", "did:74959999999:to", "ext:1"),
    ]

    calls = provision.plan(state, current)

    sets = [c for c in calls if c.method != "htable.delete"]
    deletes = [c.params for c in calls if c.method == "htable.delete"]
    assert calls[: len(sets)] == sets  # all sets come before any delete
    assert len(sets) == len(state.entries())
    assert provision.RpcCall("htable.seti", ("pbx", "ext:pbx.test:102:timeout", 15)) in sets
    assert sorted(deletes) == [("creds", "103@pbx.test"), ("pbx", "did:74950000000"),
                               ("pbx", "did:74950000000:to"), ("pbx", "ext:pbx.test:103")]


def test_restore_replays_the_last_state_per_tenant_through_rpc(tmp_path: Path) -> None:
    state = provision.load(write(tmp_path, GOOD))["acme"]
    older = provision.TenantState("acme", "pbx.test", {"101@pbx.test": "old"})
    gone = provision.TenantState("gone", "gone.test")
    records = [(b"acme", older.to_json()), (b"gone", gone.to_json()), (b"acme", state.to_json()),
               (b"gone", None)]
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def rpc(method: str, *params: Any) -> Any:
        sent.append((method, params))
        return [] if method == "htable.dump" else None

    count = provision.restore(None, rpc=rpc,  # type: ignore[arg-type]
                              reader=lambda _s: provision.latest_states(records))

    assert count == len(state.entries())
    assert ("htable.sets", ("creds", "101@pbx.test", state.creds["101@pbx.test"])) in sent
    assert all(params[0] != "gone" for _, params in sent)


# --- the shipped example and the operator's command ------------------------------------


def test_the_shipped_example_is_valid_and_is_what_the_stack_applies_by_default() -> None:
    from core.settings import load
    from tawag.demo import AGENTS, DemoTenant

    settings = load(environ={})
    assert settings.provisioning_file.exists()
    assert provision.check(settings.provisioning_file) == []
    acme = provision.load(settings.provisioning_file)["acme"]
    assert acme.domain == settings.sip_domain
    assert {f"{u}@pbx.test" for u in ("101", "102", "103", "104", "105")} == set(acme.creds)
    # the demo registers and calls with these passwords, outside calls come from the trunk
    demo = DemoTenant.from_file(settings.provisioning_file, settings.sip_domain)
    assert set(AGENTS) <= set(demo.passwords) and set(AGENTS) <= set(demo.direct_dids)
    assert len(demo.trunk_ports) >= 2


def run_cli(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from tawag.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_provision_check_prints_file_line_message_and_exits_1(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace('members = ["102", "101"]', 'members = ["102", "109"]')
                .replace('no_answer_timeout = 15', 'no_answer_timeout = 0'))

    code, out, err = run_cli("provision", "--check", str(bad))

    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{bad}:13: no_answer_timeout: whole seconds between 1 and 600, got 0",
        f"{bad}:17: group sales: member '109' is not an extension of this tenant",
    ]


def test_provision_check_of_a_good_file_touches_nothing(tmp_path: Path) -> None:
    code, out, err = run_cli("provision", "--check", str(write(tmp_path, GOOD)))

    assert (code, err) == (0, "")
    assert out.strip().endswith(": ok")


def test_provision_of_a_bad_file_applies_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(provision, "apply", lambda *a, **k: pytest.fail("applied a bad file"))
    code, _, err = run_cli("provision", str(write(tmp_path, "[tenant.acme\n")))

    assert code == 1 and ":1: not valid TOML" in err


def test_speed_dial_and_masks_compile_and_only_the_mask_table_holds_the_number(
    tmp_path: Path,
) -> None:
    text = GOOD + '''
[tenant.acme.speed_dial]
"7" = "ext:102"
"8" = "+79261110000"

[tenant.acme.mask]
"4501" = "+79035550199"
'''
    state = provision.load(write(tmp_path, text))["acme"]

    assert state.strings["speed:pbx.test:7"] == "ext:102"
    assert state.strings["speed:pbx.test:8"] == "tel:+79261110000"
    assert state.strings["mask:pbx.test:4501"] == "+79035550199"
    assert state.strings["mask:pbx.test:4501:shown"] == "+7********99"
    assert [k for k, v in state.strings.items() if "9035550199" in v] == ["mask:pbx.test:4501"]


def test_bad_speed_dial_and_mask_entries_are_reported_at_their_lines(tmp_path: Path) -> None:
    text = GOOD + '''
[tenant.acme.speed_dial]
"101" = "ext:102"
"9" = "group:nope"

[tenant.acme.mask]
"4501" = "not-a-number"
'''
    path = write(tmp_path, text)
    messages = [str(e) for e in provision.check(path)]

    assert messages == [
        f"{path}:24: speed_dial '101' is also an extension or group of this tenant",
        f"{path}:25: speed_dial 9: 'group:nope' is not provisioned in this tenant",
        f"{path}:28: mask 4501: not a phone number: 'not-a-number'",
    ]


def test_a_tenant_names_its_iana_time_zone_and_a_bad_one_is_reported(tmp_path: Path) -> None:
    good = GOOD.replace('trunk = "127.0.0.1:5090"\n',
                        'trunk = "127.0.0.1:5090"\ntime_zone = "Asia/Manila"\n', 1)
    assert provision.check(write(tmp_path, good)) == []
    bad = GOOD.replace('trunk = "127.0.0.1:5090"\n',
                       'trunk = "127.0.0.1:5090"\ntime_zone = "Moscow"\n', 1)
    [error] = provision.check(write(tmp_path, bad))
    assert error.line == 5 and "time_zone" in error.message and "'Moscow'" in error.message


def test_the_demo_tenant_is_in_moscow_and_others_get_the_default(tmp_path: Path) -> None:
    from core.settings import load

    settings = load(environ={})
    assert settings.time_zone_of("acme") == "Europe/Moscow"  # the shipped example
    assert settings.time_zone_of("unknown") == "UTC"
    other = load(environ={"TAWAG_DEFAULT_TIME_ZONE": "Asia/Novosibirsk",
                          "TAWAG_PROVISIONING_FILE": str(write(tmp_path, GOOD))})
    assert other.time_zone_of("acme") == "Asia/Novosibirsk"  # GOOD names no zone


def test_white_and_black_lists_compile_to_caller_keys_without_the_plus(tmp_path: Path) -> None:
    text = GOOD.replace('trunk = "127.0.0.1:5090"\n',
                        'trunk = "127.0.0.1:5090"\nblacklist = ["+74950000666"]\n', 1).replace(
        'no_answer_timeout = 15\n', 'no_answer_timeout = 15\nwhitelist = ["+79035550101"]\n', 1)
    path = write(tmp_path, text)
    assert provision.check(path) == []
    state = provision.load(path)["acme"]
    assert state.strings["white:pbx.test:79035550101"] == "102"
    assert state.ints["block:pbx.test:74950000666"] == 1
    # both belong to the tenant: a later file without them deletes them
    calls = provision.plan(provision.load(write(tmp_path, GOOD))["acme"],
                           [("pbx", "white:pbx.test:79035550101", "102"),
                            ("pbx", "block:pbx.test:74950000666", 1)])
    assert {c.params for c in calls if c.method == "htable.delete"} == {
        ("pbx", "white:pbx.test:79035550101"), ("pbx", "block:pbx.test:74950000666")}


def test_a_listed_number_has_one_rule_and_bad_entries_are_reported_at_their_lines(
        tmp_path: Path) -> None:
    text = GOOD.replace('trunk = "127.0.0.1:5090"\n',
                        'trunk = "127.0.0.1:5090"\nblacklist = ["+74950000666"]\n', 1).replace(
        'forward = { no_answer = "mobile", busy = "ext:102" }\n',
        'forward = { no_answer = "mobile", busy = "ext:102" }\n'
        'whitelist = ["79035550101", "+74950000666"]\n', 1).replace(
        'no_answer_timeout = 15\n',
        'no_answer_timeout = 15\nwhitelist = ["+79035550101", "nope"]\n', 1)
    path = write(tmp_path, text)
    messages = [str(e) for e in provision.check(path)]

    assert messages == [
        f"{path}:11: extension 101: +74950000666 is also in the tenant's blacklist",
        f"{path}:16: whitelist: a list of phone numbers such as \"+79161234567\"",
    ]
    fixed = text.replace('whitelist = ["+79035550101", "nope"]', 'whitelist = ["+79035550101"]'
                         ).replace(', "+74950000666"]', ']')
    [error] = provision.check(write(tmp_path, fixed))
    assert (error.line, error.message) == (
        16, "extension 102: +79035550101 is already white-listed for extension 101")


def test_manager_timeout_and_longest_idle_compile_and_a_bad_timeout_names_its_line(
        tmp_path: Path) -> None:
    text = GOOD.replace('trunk = "127.0.0.1:5090"\n',
                        'trunk = "127.0.0.1:5090"\nmanager_timeout = 7\n', 1).replace(
        '"sequential"', '"longest_idle"')
    state = provision.load(write(tmp_path, text))["acme"]
    assert state.ints["tenant:pbx.test:mgr_timeout"] == 7
    assert state.strings["group:pbx.test:sales:mode"] == "idle"
    default = provision.load(write(tmp_path, GOOD))["acme"]
    assert default.ints["tenant:pbx.test:mgr_timeout"] == provision.DEFAULT_MANAGER_TIMEOUT_S
    path = write(tmp_path, text.replace("manager_timeout = 7", "manager_timeout = 0"))
    [error] = provision.check(path)
    assert (error.line, error.message.split(":")[0]) == (5, "manager_timeout")


QUEUED = GOOD.replace('"sequential"', '"longest_idle"').replace(
    'members = ["102", "101"]\n',
    'members = ["102", "101"]\n'
    'queue = { max_wait_s = 30, max_length = 3, overflow = "+79161234567" }\n')


def test_a_queue_compiles_to_wait_length_and_overflow_target(tmp_path: Path) -> None:
    state = provision.load(write(tmp_path, QUEUED))["acme"]

    assert state.ints["group:pbx.test:sales:qwait"] == 30
    assert state.ints["group:pbx.test:sales:qlen"] == 3
    assert state.strings["group:pbx.test:sales:qover"] == "tel:+79161234567"
    assert "group:pbx.test:sales:fwd:q" not in state.strings
    plain = provision.load(write(tmp_path, GOOD))["acme"]
    assert not any(":q" in key for key in [*plain.ints, *plain.strings])


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (QUEUED.replace("max_wait_s = 30", "max_wait_s = 0"), "max_wait_s: whole seconds"),
        (QUEUED.replace("max_length = 3", "max_length = 1000"), "max_length: whole number"),
        (QUEUED.replace("max_length = 3, ", ""), "queue: max_length is required"),
        (QUEUED.replace('"+79161234567" }', '"ext:199" }'),
         "queue overflow: 'ext:199' is not provisioned"),
        (QUEUED.replace('"+79161234567" }', '"group:sales" }'),
         "cannot overflow to its own group"),
        (QUEUED.replace("max_length = 3", "max_length = 3, music = true"), "unknown key 'music'"),
        (QUEUED.replace('"longest_idle"', '"ring_all"'), "strategy must be longest_idle"),
        (QUEUED.replace("queue = {", "queue = 5 #"), "queue must be a table"),
    ],
)
def test_each_queue_defect_names_the_queue_line(tmp_path: Path, broken: str,
                                                message: str) -> None:
    path = write(tmp_path, broken)

    [error] = provision.check(path)

    assert error.line == 18, error
    assert message in error.message, error.message


@pytest.mark.parametrize(("strategy", "mode"), [("least_calls", "least"),
                                                ("round_robin", "rr")])
def test_least_calls_and_round_robin_compile_to_their_live_modes(
        tmp_path: Path, strategy: str, mode: str) -> None:
    text = GOOD.replace('"sequential"', f'"{strategy}"')
    assert provision.check(write(tmp_path, text)) == []
    assert provision.load(write(tmp_path, text))["acme"].strings[
        "group:pbx.test:sales:mode"] == mode


def test_an_unknown_strategy_names_its_line_and_the_strategies(tmp_path: Path) -> None:
    text = GOOD.replace('"sequential"', '"fewest_calls"')
    [error] = provision.check(write(tmp_path, text))
    assert error.line == next(i for i, line in enumerate(text.splitlines(), 1)
                              if "fewest_calls" in line)
    assert "least_calls" in error.message and "round_robin" in error.message
