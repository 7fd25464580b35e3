"""Schemathesis checks of Roster's error contract (CONTRACT §6), loaded by
the `fuzz` end-to-end test through SCHEMATHESIS_HOOKS."""

import json

import schemathesis


@schemathesis.check
def problem_json(ctx, response, case):
    """Every 4xx/5xx is application/problem+json with a stable upper-case code."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type != "application/problem+json":
        raise AssertionError(f"{response.status_code} with content-type {content_type!r}")
    body = json.loads(response.content)
    code = body.get("code")
    if not (isinstance(code, str) and code and code.replace("_", "").isalpha() and code.isupper()):
        raise AssertionError(f"{response.status_code} without a stable code: {body}")
    if body.get("status") != response.status_code:
        raise AssertionError(f"status member {body.get('status')} differs from {response.status_code}")
    return None


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """Half the generated ids name the test's real user, so the fuzzer gets
    past 404 into validation and the aggregates."""
    import os
    import random

    user = os.environ.get("ROSTER_FUZZ_USER")
    if user and path_parameters and "id" in path_parameters and random.random() < 0.5:
        path_parameters["id"] = user
    return path_parameters
