"""The built-in redactor: what it replaces, what it must leave alone (digests, ids, prose)."""

from __future__ import annotations

import pytest

from broker.audit.redact import Redactor, SecretRedactor, secret_key

redactor: Redactor = SecretRedactor()  # the protocol issue #8's DLP detectors will implement


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_password", "passphrase", "client_secret", "apiKey", "api_key", "x-api-key",
     "Authorization", "accessToken", "refresh_token", "id_token", "auth_token", "cookie", "Set-Cookie",
     "private_key", "privateKey", "aws_secret_access_key", "credentials", "sessionId", "signing_key"],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "tokens", "token_count", "token_url", "password_policy", "key", "keys", "monkey", "author",
     "session", "path", "title", "secretary_name", "api_key_name"],
)  # fmt: skip
def test_keys_that_only_talk_about_secrets(key: str) -> None:
    assert not secret_key(key)


@pytest.mark.parametrize(
    ("text", "redacted", "kind"),
    [
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "[REDACTED:jwt]",
            "jwt",
        ),
        (
            "key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"
            "-----END OPENSSH PRIVATE KEY-----\nbye",
            "key: [REDACTED:private_key]\nbye",
            "private_key",
        ),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqh (cut off)", "[REDACTED:private_key]", "private_key"),
        (
            "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
            "export AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key]",
            "aws_access_key",
        ),
        (
            "gh token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "gh token [REDACTED:github_token]",
            "github_token",
        ),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "[REDACTED:github_token]",
            "github_token",
        ),
        ("slack xoxb-1234567890-abcdefghijklmn", "slack [REDACTED:slack_token]", "slack_token"),
        (
            "post to https://hooks.slack.com/services/T000/B000/XXXXXXXX now",
            "post to [REDACTED:slack_token] now",
            "slack_token",
        ),
        ("stripe sk_live_abcdefghijklmnop1234", "stripe [REDACTED:stripe_key]", "stripe_key"),
        ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "[REDACTED:google_api_key]", "google_api_key"),
        ("OPENAI sk-proj-abcdefghijklmnopqrstuvwx", "OPENAI [REDACTED:api_key]", "api_key"),
        (
            "curl -H 'Authorization: Bearer abc.def-ghi_jkl'",
            "curl -H 'Authorization: Bearer [REDACTED:bearer]'",
            "bearer",
        ),
        (
            "https://api.example.com/v1?user=1&access_token=s3cr3t&x=2",
            "https://api.example.com/v1?user=1&access_token=[REDACTED:url_secret]&x=2",
            "url_secret",
        ),
        (
            "secret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "secret: [REDACTED:high_entropy]",
            "high_entropy",
        ),
    ],
)
def test_secret_values(text: str, redacted: str, kind: str) -> None:
    out, found = redactor.redact({"note": text})
    assert out == {"note": redacted}
    assert found == (f"note: {kind}",)
    assert redactor.redact_text(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "0123456789abcdef0123456789abcdef01234567",
        "550e8400-e29b-41d4-a716-446655440000",
        "/workspace/src/components/authentication/TokenRefreshButton.tsx",
        "The quick brown fox jumps over the lazy dog, and then files a ticket about the token budget.",
        "https://example.com/search?q=tokens&page=2",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "short",
    ],
)
def test_values_that_are_not_secrets(text: str) -> None:
    assert redactor.redact({"note": text}) == ({"note": text}, ())


def test_nested_values_and_key_paths() -> None:
    value = {
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "application/json"},
        "items": [{"password": 1234}, {"name": "x"}, "Bearer abcdefghijklmnop"],
        "db_password": "",
        "token": None,
        "count": 3,
    }
    out, found = redactor.redact(value)
    assert out == {
        "headers": {"Authorization": "[REDACTED:key]", "Accept": "application/json"},
        "items": [{"password": "[REDACTED:key]"}, {"name": "x"}, "Bearer [REDACTED:bearer]"],
        "db_password": "",
        "token": None,
        "count": 3,
    }
    assert found == ("headers.Authorization: key", "items[0].password: key", "items[2]: bearer")
    assert value["headers"]["Authorization"] == "Basic dXNlcjpwYXNz"  # the input is not changed
