"""The call's security code on the call screen (js/security-code.js): the same on both sides of
a call, renewed with the peer connection, and computed exactly as the Python reference
(facecall.e2ee.security_code, the spec) computes it."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from facecall.client import EndReason
from facecall.e2ee.security_code import sdp_fingerprints, security_code
from tests.live import LiveServer, MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_python_peer import browser_calls_sdk, sdk_device  # noqa: F401 (fixture)
from tests.web.test_reload import reload_in_call

CODE = re.compile(r"^\d{5} \d{5} \d{5} \d{5}$")
A = "8A:73:87:6D:C0:ED:1E:7A:DB:DB:A0:6A:67:1A:F9:E7:C7:0A:0A:05:91:41:77:59:08:6B:7D:59:7F:23:A2:32"
ZERO = ":".join(["00"] * 32)
KNOWN_ANSWER = "39315 78335 00203 42381"


async def shown_code(person: Person, *, not_: str | None = None) -> str:
    """The code ``person``'s call screen shows once it is connected (another than ``not_``):
    on screen, in four groups of five digits, and the same in the diagnostics."""
    code = person.page.locator("#security-code")
    if not_ is not None:  # the old connection's code goes first (hidden, or replaced)
        await expect(code).not_to_have_text(not_, timeout=STEP)
    await expect(code).to_have_text(CODE, timeout=STEP)
    await expect(code).to_be_visible()
    text = (await code.text_content() or "").strip()
    assert CODE.fullmatch(text), text
    diag = await person.wait_for(lambda d: d.get("securityCode") == text, "the code in the diagnostics")
    assert diag["phase"] == "active"
    return text


async def test_both_browsers_show_the_same_code_and_a_reload_renews_it(people: PersonFactory,
                                                                        screenshots: Path) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.in_call_with(bob)
    code = await shown_code(alice)
    assert await shown_code(bob) == code

    # what it means, on the screen and for screen readers
    summary = alice.page.locator("#security summary")
    help_text = ("Compare this code with the other person: if it is the same on both screens, "
                 "nobody — not even the server — can see or hear this call.")
    await expect(summary).to_have_accessible_description(help_text)
    await expect(alice.page.locator("#security-help")).to_be_hidden()
    await summary.click()
    await expect(alice.page.locator("#security-help")).to_be_visible()
    await expect(alice.page.locator("#security-help")).to_have_text(help_text)
    await alice.page.screenshot(path=screenshots / "security-code.png")

    # a reload makes a new peer connection, with a new certificate on the page that reloaded:
    # both sides show the new connection's code
    for who, other in ((bob, alice), (alice, bob)):
        await reload_in_call(who)
        await who.wait_connected()
        await other.wait_connected()
        renewed = await shown_code(who, not_=code)
        assert await shown_code(other, not_=code) == renewed
        code = renewed

    await bob.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    for person in (alice, bob):
        await expect(person.page.locator("#security")).to_have_js_property("hidden", True)
        assert (await person.diagnostics())["phase"] == "idle"
    assert not alice.errors and not bob.errors


async def test_a_call_moved_to_another_device_shows_that_device_s_code(people: PersonFactory) -> None:
    """The device a call moves to has its own certificate: a new code, the same for both."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    code = await shown_code(laptop)
    assert await shown_code(bob) == code
    await expect(phone.page.locator("#handoff")).to_contain_text("in a call with bob", timeout=STEP)
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    moved = await shown_code(phone, not_=code)
    assert await shown_code(bob, not_=code) == moved
    await expect(laptop.page.locator("#home-view")).to_be_visible()
    await expect(laptop.page.locator("#security")).to_have_js_property("hidden", True)
    assert "securityCode" not in await laptop.diagnostics()
    await phone.hang_up()
    await expect(bob.page.locator("#security")).to_have_js_property("hidden", True, timeout=STEP)
    assert not (laptop.errors or phone.errors or bob.errors)


def sdp(session: list[str], *media: list[str], newline: str = "\r\n") -> str:
    """An SDP with ``session`` lines at session level and one media section per ``media``."""
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", *session]
    for index, extra in enumerate(media):
        kind = "audio" if index == 0 else "video"
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=mid:{index}", *extra]
    return newline.join([*lines, ""])


def fingerprint(rng: random.Random, size: int = 32) -> str:
    return ":".join(f"{rng.randrange(256):02X}" for _ in range(size))


def mixed_case(rng: random.Random, hex_: str) -> str:
    return "".join(c.lower() if rng.random() < 0.5 else c for c in hex_)


def generated_sdp(rng: random.Random) -> str:
    """Real-looking SDP: one to three certificates' sha-256 lines (hex in any case, some said
    twice), sha-1/384/512 lines of other certificates, at session or media level."""
    session: list[str] = []
    media: list[list[str]] = [[] for _ in range(rng.randint(1, 3))]
    lines = []
    for _ in range(rng.randint(1, 3)):
        value = fingerprint(rng)
        lines += [f"a=fingerprint:{rng.choice(['sha-256', 'SHA-256', 'Sha-256'])} {mixed_case(rng, value)}"
                  for _ in range(rng.randint(1, 2))]
    for name, size in (("sha-1", 20), ("sha-384", 48), ("sha-512", 64)):
        if rng.random() < 0.6:
            lines.append(f"a=fingerprint:{name} {mixed_case(rng, fingerprint(rng, size))}")
    rng.shuffle(lines)
    for line in lines:
        place = rng.randrange(len(media) + 1)
        (session if place == 0 else media[place - 1]).append(line + rng.choice(["", " ", "\t"]))
    for section in media:
        section.append("a=setup:actpass")
    return sdp(session, *media, newline=rng.choice(["\r\n", "\n", "\r"]))


def cases() -> list[tuple[str, str]]:
    """(local SDP, remote SDP) pairs to compute the code of, in the page and in Python."""
    known = [
        (sdp([f"a=fingerprint:sha-256 {A}"], []), sdp([], [f"a=fingerprint:sha-256 {ZERO}"])),
        (sdp([], [f"a=fingerprint:sha-256 {ZERO}"]), sdp([f"a=fingerprint:sha-256 {A}"], [])),
        # the same certificate in any case, said at both levels; other hash functions ignored
        (sdp([f"a=fingerprint:SHA-256 {A.lower()}"],
             [f"a=fingerprint:sha-256 {A}", "a=fingerprint:sha-384 " + ":".join(["AB"] * 48)],
             ["a=fingerprint:sha-512 " + ":".join(["cd"] * 64), "a=fingerprint:sha-256 nothex",
              "a=fingerprint:sha-256"]),
         sdp([], [f"a=fingerprint:sha-256 {ZERO}"], newline="\n")),
    ]
    rng = random.Random(20240611)
    two_certificates = sdp([f"a=fingerprint:sha-256 {fingerprint(rng)}"],
                           [f"a=fingerprint:sha-256 {mixed_case(rng, fingerprint(rng))}"])
    none = [
        (sdp([], ["a=setup:actpass"]), sdp([f"a=fingerprint:sha-256 {A}"], [])),  # no fingerprint
        (sdp([f"a=fingerprint:sha-256 {A}"], []),
         sdp(["a=fingerprint:sha-384 " + ":".join(["AB"] * 48)], [])),  # no sha-256 one
        ("", sdp([f"a=fingerprint:sha-256 {A}"], [])),
    ]
    generated = [(generated_sdp(rng), generated_sdp(rng)) for _ in range(24)]
    return [*known, (two_certificates, generated[0][1]), *none, *generated]


async def test_the_page_computes_the_code_as_the_python_reference(browser: Browser,
                                                                   server: LiveServer) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{server.base_url}/")  # a secure context (crypto.subtle), the app's origin
        pairs = cases()
        results: list[dict[str, Any]] = await page.evaluate("""async (pairs) => {
            const { sdpFingerprints, securityCode } = await import("/js/security-code.js");
            const out = [];
            for (const [local, remote] of pairs) {
                out.push({ code: await securityCode(local, remote),
                           local: sdpFingerprints(local), remote: sdpFingerprints(remote) });
            }
            return out;
        }""", [list(pair) for pair in pairs])
        # two connected peer connections in the page: the code the call screen shows (this
        # side's description, the certificate the other side's DTLS presented) is the code of
        # the descriptions, on both sides
        connected: dict[str, Any] = await page.evaluate("""async () => {
            const { peerSecurityCode, remoteCertificateFingerprint } = await import("/js/security-code.js");
            const one = new RTCPeerConnection(), other = new RTCPeerConnection();
            one.onicecandidate = (e) => e.candidate && other.addIceCandidate(e.candidate);
            other.onicecandidate = (e) => e.candidate && one.addIceCandidate(e.candidate);
            one.createDataChannel("x");
            await one.setLocalDescription();
            await other.setRemoteDescription(one.localDescription);
            await other.setLocalDescription();
            await one.setRemoteDescription(other.localDescription);
            const up = (pc) => new Promise((resolve) => {
                const check = () => pc.connectionState === "connected" && resolve();
                pc.addEventListener("connectionstatechange", check);
                check();
            });
            await Promise.all([up(one), up(other)]);
            const result = {
                one: await peerSecurityCode(one), other: await peerSecurityCode(other),
                certificate: await remoteCertificateFingerprint(one),
                sdp: [one.localDescription.sdp, one.remoteDescription.sdp],
            };
            one.close();
            other.close();
            return result;
        }""")
    finally:
        await context.close()

    assert results[0]["code"] == results[1]["code"] == KNOWN_ANSWER
    assert results[2]["code"] == KNOWN_ANSWER  # one certificate, said several ways
    assert results[2]["local"] == f"sha-256 {A}"
    assert results[3]["local"].count(",") == 1  # two certificates on one side
    assert [r["code"] for r in results[4:7]] == [None, None, None]
    for (local, remote), result in zip(pairs, results, strict=True):
        assert result["local"] == sdp_fingerprints(local), local
        assert result["remote"] == sdp_fingerprints(remote), remote
        assert result["code"] == security_code(local, remote), (local, remote)
    assert len({r["code"] for r in results[7:]}) == len(results) - 7  # the generated ones all differ

    local, remote = connected["sdp"]
    assert connected["certificate"] == sdp_fingerprints(remote)
    assert connected["one"] == connected["other"] == security_code(local, remote)
    assert connected["one"] is not None and CODE.fullmatch(connected["one"])


async def test_the_browser_and_the_python_sdk_show_the_same_code(people: PersonFactory,
                                                                sdk_device: MakeDevice) -> None:  # noqa: F811
    bot = await sdk_device("bot")
    alice = await people("alice")
    incoming = await browser_calls_sdk(alice, bot)
    code = await shown_code(alice)
    assert incoming.security_code == code
    assert incoming.security_code == code

    # the page reloads: the SDK offers on a new connection, and both sides agree on its code
    await reload_in_call(alice)
    await alice.wait_connected()
    renewed = await shown_code(alice, not_=code)
    assert incoming.security_code == renewed

    await alice.hang_up()
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    await expect(alice.page.locator("#security")).to_have_js_property("hidden", True)
