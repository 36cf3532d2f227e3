"""Safety numbers (facecall.e2ee.safety_number): the known answer the web client checks too,
the same in either order, and changed by any device key added, dropped or swapped."""

from __future__ import annotations

import pytest

from facecall.e2ee.identity import IdentityError, new_private_key, public_key_text
from facecall.e2ee.safety_number import half, safety_number

KEY_A = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # RFC 8032 §7.1 test 1's public key
KEY_B = "PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"  # test 2's
#: web/js/safety-number.js's test checks the same
KNOWN = "75991 90029 69879 20070 03470 72705 76451 21865 48196 66011 62640 19842"


def test_the_published_known_answer_in_either_order() -> None:
    assert half("user-a", [KEY_A]) == "764512186548196660116264019842"
    assert half("user-b", [KEY_B]) == "759919002969879200700347072705"
    assert safety_number(("user-a", [KEY_A]), ("user-b", [KEY_B])) == KNOWN
    assert safety_number(("user-b", [KEY_B]), ("user-a", [KEY_A])) == KNOWN


def test_a_persons_keys_count_as_a_set() -> None:
    other = public_key_text(new_private_key())
    assert half("user-a", [KEY_A, other]) == half("user-a", [other, KEY_A, other])


@pytest.mark.parametrize("alice_keys", [
    [KEY_A, public_key_text(new_private_key())],  # a device added (by her, or by the server)
    [public_key_text(new_private_key())],  # her key swapped
    [KEY_B],  # someone else's key under her name
])
def test_any_change_to_a_persons_keys_changes_the_number(alice_keys: list[str]) -> None:
    assert safety_number(("user-a", alice_keys), ("user-b", [KEY_B])) != KNOWN


def test_the_user_ids_count() -> None:
    assert safety_number(("user-x", [KEY_A]), ("user-b", [KEY_B])) != KNOWN


@pytest.mark.parametrize("user_id, keys", [
    ("user-a", []),
    ("user-a", ["not a key"]),
    ("user-a", [KEY_A[:-1] + "p"]),
    ("", [KEY_A]),
    ("a\nb", [KEY_A]),
])
def test_what_has_no_number(user_id: str, keys: list[str]) -> None:
    with pytest.raises(IdentityError):
        half(user_id, keys)
