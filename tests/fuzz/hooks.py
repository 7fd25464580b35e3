"""Schemathesis checks of Roster's error contract (CONTRACT §6), loaded by
the `fuzz` end-to-end test through SCHEMATHESIS_HOOKS."""

import json

import schemathesis


@schemathesis.check
def problem_json(ctx, response, case):
    """Every 4xx/5xx is application/problem+json with a stable upper-case code
    (the Cradl routes, CONTRACT §11: application/json with `error_codes`)."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if case.path.startswith("/v2/users"):
        return cradl_error(response, content_type)
    if content_type != "application/problem+json":
        raise AssertionError(f"{response.status_code} with content-type {content_type!r}")
    body = json.loads(response.content)
    code = body.get("code")
    if not (isinstance(code, str) and code and code.replace("_", "").isalpha() and code.isupper()):
        raise AssertionError(f"{response.status_code} without a stable code: {body}")
    if body.get("status") != response.status_code:
        raise AssertionError(f"status member {body.get('status')} differs from {response.status_code}")
    return None


def stable(code):
    return isinstance(code, str) and code and code.replace("_", "").isalpha() and code.isupper()


def cradl_error(response, content_type):
    """A Cradl error: `{user_id, error_codes: [...]}` as application/json."""
    if content_type != "application/json":
        raise AssertionError(f"{response.status_code} with content-type {content_type!r}")
    body = json.loads(response.content)
    codes = body.get("error_codes")
    if not (isinstance(codes, list) and codes and all(stable(c) for c in codes)):
        raise AssertionError(f"{response.status_code} without stable error_codes: {body}")
    if "user_id" not in body:
        raise AssertionError(f"{response.status_code} without user_id: {body}")
    return None


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """Half the generated ids name the test's real user, so the fuzzer gets
    past 404 into validation and the aggregates."""
    import os
    import random

    user = os.environ.get("ROSTER_FUZZ_USER")
    if user and path_parameters and random.random() < 0.5:
        for name in ("id", "user_id"):
            if name in path_parameters:
                path_parameters[name] = user
    return path_parameters
