"""Creates or updates one pull-request comment, found again by a hidden marker.

    python ci/pr_comment.py --marker appdb:migrations --body-file report.md

Each job keeps one comment up to date instead of adding one per push. It needs
``GITHUB_TOKEN`` (a job with ``pull-requests: write``), ``GITHUB_REPOSITORY`` and
``PR_NUMBER`` in the environment; the workflow passes the number through ``env:``, never
by interpolating the event into the script. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

MAX_BODY = 65_000  # GitHub refuses comments over 65,536 characters


def _request(method: str, url: str, token: str, payload: dict | None = None) -> object:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28",
        "Content-Type": "application/json",
    })
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the API URL is GitHub's)
        return json.loads(response.read() or b"null")


def with_marker(body: str, marker: str) -> str:
    tag = f"<!-- {marker} -->"
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY] + "\n\n(truncated: the job summary has the rest)"
    return f"{tag}\n{body}"


def upsert(api: str, repo: str, number: int, token: str, marker: str, body: str) -> str:
    """PATCH the comment carrying ``marker``, or POST a new one; returns what was done."""
    tag = f"<!-- {marker} -->"
    page = 1
    while True:
        comments = _request("GET", f"{api}/repos/{repo}/issues/{number}/comments?per_page=100&page={page}", token)
        assert isinstance(comments, list)
        for comment in comments:
            if tag in (comment.get("body") or ""):
                _request("PATCH", f"{api}/repos/{repo}/issues/comments/{comment['id']}", token,
                         {"body": with_marker(body, marker)})
                return "updated"
        if len(comments) < 100:
            break
        page += 1
    _request("POST", f"{api}/repos/{repo}/issues/{number}/comments", token, {"body": with_marker(body, marker)})
    return "created"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/pr_comment.py", description=__doc__.splitlines()[0])
    parser.add_argument("--marker", required=True, help="a stable name, e.g. appdb:migrations")
    parser.add_argument("--body-file", required=True, type=Path)
    args = parser.parse_args(argv)

    missing = [name for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "PR_NUMBER") if not os.environ.get(name)]
    if missing:
        print(f"pr_comment: error: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    number = os.environ["PR_NUMBER"]
    if not number.isdigit():
        print("pr_comment: error: PR_NUMBER is not a number", file=sys.stderr)
        return 2
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    done = upsert(api, os.environ["GITHUB_REPOSITORY"], int(number), os.environ["GITHUB_TOKEN"],
                  args.marker, args.body_file.read_text(encoding="utf-8"))
    print(f"pr_comment: {done} the {args.marker} comment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
